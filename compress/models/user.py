"""Your own Brevitas model: a factory reference, or a module already in memory.

A factory is `path/to/file.py:name` or `package.module:name`, a callable returning an
`nn.Module`; its keyword arguments come from the config (`model_args`), plus `in_shape` and
`num_classes` when its signature takes them (the data decides those). The record stores the
reference and the arguments (`UserArch`), so a checkpoint is rebuilt by calling the factory
again and loading the state dict with `weights_only=True`: no pickled code.

What such a model must do to go through FINN: take raw 0..255 pixels (N x C x H x W) and
quantize them at its input (e.g. `x / 255` into a UINT8 `QuantIdentity` of scale 1/255, as the
zoo does, or any integer input quantizer), use Brevitas quantized layers throughout, and end
in a quantized linear/conv layer (see the README's "Bring your own").
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fpgaslim.core.errors import ConfigError

from .arch import UserArch, UserBits
from .blocks import (DOC, act_bits, apply_block_edits, block_names, has_blocks, plain_chain,
                     residual_end, trace_blocks, weight_bits)
from .quant import non_channel_params

#: what a method can need from a model (each method module says which: its NEEDS,
#: compress/methods.py), as the error a user model gets says it. "channels": any model whose
#: channel groups Torch-Pruning can trace (its own error names the layer)
_BLOCKS = f"its residual blocks, named by a residual_blocks() method ({DOC})"
NEED_TEXT = {
    "blocks": _BLOCKS,
    "units": _BLOCKS[:-1] + ", each block class naming the BatchNorm that ends "
             "its residual branch: residual_end = 'bn2')",
    # the chain's own error says which block or layer, what is missing, and where the docs are
    "chain": "a network it can turn into one plain chain of layers",
}


def is_factory_ref(name: str) -> bool:
    """'file.py:fn' or 'pkg.mod:fn' (zoo names have no colon)."""
    mod, sep, attr = name.rpartition(":")
    return bool(sep and mod and attr and not mod.endswith(("folder", "npz", "idx")))


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve(ref: str) -> tuple[Callable[..., Any], Path | None]:
    """The callable a factory reference names, and its .py file when given by path."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"model {ref!r}: use path/to/file.py:factory or "
                          "package.module:factory")
    path: Path | None = None
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"model {ref!r}: file {path} does not exist")
        name = "fpgaslim_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"model {ref!r}: {path} is not a loadable Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise ConfigError(f"model {ref!r}: importing {path} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = sys.modules.get(target) or importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"model {ref!r}: cannot import module {target!r} ({exc}); give "
                              "a path/to/file.py:factory or put the package on PYTHONPATH"
                              ) from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            found = sorted(n for n in dir(module) if not n.startswith("_")
                           and callable(getattr(module, n)))
            raise ConfigError(f"model {ref!r}: {target} has no {attr!r} (callables there: "
                              f"{', '.join(found[:12]) or 'none'})")
    if not callable(fn):
        raise ConfigError(f"model {ref!r}: {attr!r} is not callable")
    return fn, path


def _bits_label(model: nn.Module) -> str:
    """'w4a4' style label from the Brevitas quantizers (most common weight / act bits)."""
    from collections import Counter

    w = Counter(b for m in model.modules() if (b := weight_bits(m)))
    a = Counter(b for m in model.modules() if (b := act_bits(m)))
    if not w:
        return "custom"
    return f"w{w.most_common(1)[0][0]}" + (f"a{a.most_common(1)[0][0]}" if a else "")


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], in_shape, num_classes: int) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    extra = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "in_shape" in params or takes_any:
        extra["in_shape"] = tuple(in_shape)
    if "num_classes" in params or takes_any:
        extra["num_classes"] = num_classes
    return fn(**{**extra, **kwargs})


def check_module(model: Any, ref: str, in_shape, num_classes: int) -> nn.Module:
    """A clear error unless `model` maps one image batch to `num_classes` logits."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {ref!r} returned {type(model).__name__}, not a torch "
                          "nn.Module: the factory must return the (Brevitas) model")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *in_shape))
    except Exception as exc:
        raise ConfigError(f"model {ref!r} fails on a {tuple(in_shape)} input (the data's "
                          f"shape): {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    finally:
        model.train(was)
    out = getattr(out, "value", out)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {ref!r} returns {shape} for 2 images; a classifier of this "
                          f"data must return logits of shape (N, {num_classes})")
    return model


def create_user_model(ref: str, in_shape, num_classes: int,
                      kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Call the factory, check the module, attach its `arch` record."""
    kwargs = dict(kwargs or {})
    fn, path = resolve(ref)
    try:
        model = _call(fn, kwargs, in_shape, num_classes)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"model {ref!r} with arguments {kwargs}: the factory raised "
                          f"{type(exc).__name__}: {exc}") from exc
    model = check_module(model, ref, in_shape, num_classes)
    ref_stored = f"{path}:{ref.rpartition(':')[2]}" if path else ref
    model.arch = UserArch(name=ref.rpartition(":")[2], in_shape=tuple(in_shape),
                          num_classes=num_classes, bits=UserBits(label=_bits_label(model)),
                          source="factory", factory=ref_stored, kwargs=kwargs,
                          file_sha256=_file_sha(path) if path else None)
    return model


def _class_ref(obj: Any) -> str:
    """A reference that re-creates `obj` (a class or function): its .py file when it has one
    (works from any later process), else its importable module; a class defined in a script
    or notebook (__main__) resolves only inside that same session."""
    name = obj.__qualname__
    if "<locals>" in name:
        raise ConfigError(f"{name} is defined inside a function, so fpgaslim cannot re-create "
                          "it; define it at module level, or pass factory='file.py:name'")
    if obj.__module__ == "__main__":
        return f"__main__:{name}"
    try:
        src = inspect.getsourcefile(obj)
    except TypeError:
        src = None
    return f"{src}:{name}" if src else f"{obj.__module__}:{name}"


def adopt_module(module: nn.Module, in_shape, num_classes: int,
                 factory: str | Callable[..., Any] | None = None,
                 kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Give a module built in memory an `arch` record so that it can be saved and rebuilt.

    The record needs a way to re-create the module: `factory` (a reference or a callable),
    else the module's own class called with `kwargs`. Checked now by rebuilding it once, so a
    module that cannot be re-created is an error here, not when a later command loads it."""
    kwargs = dict(kwargs or {})
    ref = factory if isinstance(factory, str) else _class_ref(factory or type(module))
    module.eval()
    check_module(module, ref, in_shape, num_classes)
    fresh = create_user_model(ref, in_shape, num_classes, kwargs)
    ours, theirs = module.state_dict(), fresh.state_dict()
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        raise ConfigError(f"{ref} with arguments {kwargs} builds a model whose weights differ "
                          "in names or shapes from the module given; pass the factory and "
                          "kwargs that re-create this module")
    module.arch = fresh.arch.model_copy(update={"source": "module"})
    return module


def build_user_model(arch: UserArch) -> nn.Module:
    """Re-create a user model from its record (before loading a state dict)."""
    if arch.source == "qonnx" or not arch.factory:
        raise ConfigError(f"model {arch.name!r} was imported as a QONNX file: there is no "
                          "PyTorch model to load (build, compare and deploy work on the file; "
                          "compression methods and training need a Brevitas model)")
    # an edited factory file is fine as long as the weights still load (checked by the caller)
    if arch.factory.startswith("__main__:") and not hasattr(sys.modules.get("__main__"),
                                                            arch.factory.split(":", 1)[1]):
        raise ConfigError(
            f"model {arch.name!r} was added from a class defined in a script or notebook "
            "(__main__), which only that session can re-create; move the class into a .py file "
            "and add it again with factory='path/to/file.py:" f"{arch.name}'")
    model = create_user_model(arch.factory, arch.in_shape, arch.num_classes, arch.kwargs)
    model.arch = arch
    if arch.pruned:
        replay_pruning(model, arch.pruned)
    if arch.removed_blocks or arch.omega_blocks:
        apply_block_edits(model, arch.removed_blocks, arch.omega_blocks)
    return model


def require_needs(arch: Any, method: str, needs: tuple[str, ...]) -> None:
    """A clear error when `method` needs (its NEEDS) what a user model does not have."""
    if getattr(arch, "kind", None) != "user":
        return
    if arch.source == "qonnx":
        raise ConfigError(f"method {method!r} needs a PyTorch model; {arch.name!r} is an "
                          "imported QONNX file")
    own = f"variant model {arch.name!r} is your own ({arch.source})"
    unknown = [n for n in needs if n != "channels" and n not in NEED_TEXT]
    if unknown:
        raise ConfigError(f"method {method!r} needs {unknown[0]}; {own}. Build, verify, "
                          "compare and deploy work on it as is; for this method train a zoo "
                          "model (--model resnet8, ...)")
    if "blocks" in needs or "units" in needs:
        model = build_user_model(arch)
        text = NEED_TEXT["units" if "units" in needs else "blocks"]
        if not has_blocks(model):
            raise ConfigError(f"method {method!r} needs {text}; {own} and has no "
                              "residual_blocks() method")
        names = block_names(model)
        if "units" in needs:
            for i, t in enumerate(trace_blocks(model, arch.in_shape)):
                if i and t.in_shape == t.out_shape and i not in arch.removed_blocks:
                    residual_end(model, names[i])  # the units that get an omega
    if "chain" in needs:
        try:
            plain_chain(build_user_model(arch), arch.in_shape)
        except ConfigError as exc:
            raise ConfigError(f"method {method!r} needs {NEED_TEXT['chain']}; {own}: {exc}"
                              ) from exc


# --------------------------------------------------------------------------- channel pruning
def _prune_fns():
    import torch_pruning as tp

    return tp.prune_conv_out_channels, tp.prune_linear_out_channels


def _dependency_graph(model: nn.Module):
    import warnings

    import torch_pruning as tp

    dg = tp.DependencyGraph()
    with warnings.catch_warnings(), torch.enable_grad():  # DepGraph traces with autograd
        warnings.simplefilter("ignore")
        dg.build_dependency(model, example_inputs=torch.zeros(1, *model.arch.in_shape),
                            ignored_params=non_channel_params(model), verbose=False)
    return dg


def user_channel_groups(model: nn.Module) -> list[tuple[str, str, str, int]]:
    """(root layer, kind, activation, width) of every prunable channel group of a user model,
    found by tracing: each quantized conv/linear except the classifier whose output channels
    Torch-Pruning's DependencyGraph can cut alone (no coupled layer, e.g. a residual stream),
    with the first quantized activation after it (where the channel sparsity is measured)."""
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU

    kinds = (QuantConv2d, QuantLinear, QuantReLU, QuantIdentity)
    order: list[str] = []  # the layers in the order the forward pass enters them
    hooks = [m.register_forward_pre_hook(lambda mod, i, n=n: order.append(n))
             for n, m in model.named_modules() if n and isinstance(m, kinds)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *model.arch.in_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    mods = dict(model.named_modules())
    weight_layers = [n for n in order if isinstance(mods[n], (QuantConv2d, QuantLinear))]
    if not weight_layers:
        return []
    dg = _dependency_graph(model)
    conv_fn, lin_fn = _prune_fns()
    groups = []
    for name in weight_layers[:-1]:  # the classifier's outputs are the classes
        layer = mods[name]
        after = order[order.index(name) + 1:]
        act = next((a for a in after if isinstance(mods[a], (QuantReLU, QuantIdentity))
                    or isinstance(mods[a], (QuantConv2d, QuantLinear))), None)
        if act is None or isinstance(mods[act], (QuantConv2d, QuantLinear)):
            continue  # no quantized activation before the next layer: nothing to measure
        fn = conv_fn if isinstance(layer, nn.Conv2d) else lin_fn
        group = dg.get_pruning_group(layer, fn, idxs=[0])
        outs = [d for d, _ in group if d.handler in (conv_fn, lin_fn)]
        if len(outs) != 1:
            continue  # coupled with another layer's outputs (a residual stream)
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        groups.append((name, "conv" if fn is conv_fn else "hidden", act, width))
    return groups


def replay_pruning(model: nn.Module, pruned) -> nn.Module:
    """Cut `pruned` ((layer, removed output channels), in order) out of a fresh factory model,
    with Torch-Pruning as the surgery did: the shapes a pruned checkpoint's state dict needs."""
    conv_fn, lin_fn = _prune_fns()
    for name, idxs in pruned:
        mods = dict(model.named_modules())
        if name not in mods:
            raise ConfigError(f"model {model.arch.name!r}: the record prunes layer {name!r}, "
                              "which the factory's model no longer has; was the factory edited?")
        layer = mods[name]
        dg = _dependency_graph(model)
        fn = conv_fn if isinstance(layer, nn.Conv2d) else lin_fn
        dg.get_pruning_group(layer, fn, idxs=list(idxs)).prune()
    return model
