"""Helpers shared by the benchmark scripts: the machine description, one result row per
variant, Markdown tables, and saving JSON + Markdown under benchmarks/results/.

The scripts import this as a sibling module (they put their own folder on sys.path), so it
stays out of the installed `fpgaslim` package.

Every number keeps its source label: `ROW_SOURCES` says where each field of `variant_row`
comes from, and `save_results` writes it into the JSON next to the machine and the date.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fpgaslim.core.atomic import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: where each field of `variant_row` comes from (copied into every saved result's meta)
ROW_SOURCES: dict[str, str] = {
    "test_accuracy/val_accuracy/accuracy_drop": "measured (CPU, Brevitas)",
    "params/macs/depth": "counted on the model",
    "BRAM_18K/URAM/LUT/DSP/est_fps/est_latency_us/fits": "FINN estimate (finn-plus)",
    "offchip_bytes_per_frame": "FINN estimate (fpgaslim, from FINN's stream shapes and folding)",
    "bit_exact/verified": "simulated (Python execution of the folded FINN graph vs Brevitas; "
                          "verified: zero per-layer errors)",
    "hw_accuracy/verified_images": "simulated (the folded FINN graph's accuracy on the "
                                   "verified test images)",
}

_MACHINE: dict[str, Any] | None = None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine the benchmark runs on: CPU model, logical cores, memory, platform, the
    versions of python/torch/finn-plus/brevitas, and the 1-minute load average.

    The first call takes the snapshot (call it when the benchmark starts, so the load average
    is the one at the start); later calls return a copy of the same snapshot."""
    global _MACHINE
    if _MACHINE is None:
        try:
            import psutil

            memory_gb: float | None = round(psutil.virtual_memory().total / 2**30, 1)
        except ImportError:
            memory_gb = None
        _MACHINE = {
            "cpu": _cpu_model(), "logical_cores": os.cpu_count(), "memory_gb": memory_gb,
            "load_avg_1m_at_start": (round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
                                     else None),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": _version("torch"), "finn_plus": _version("finn-plus"),
            "brevitas": _version("brevitas"),
        }
    return dict(_MACHINE)


def recipe(smoke: bool) -> str:
    """The recipe label of a run: the CPU recipe, or a smoke run that is not a result."""
    return "fpgaslim CPU recipe" + (" (smoke: not a result)" if smoke else "")


def add_recipe_args(ap: argparse.ArgumentParser, model: str, *, width: bool = True) -> None:
    """The options every CPU-recipe benchmark shares: --smoke, --model, --width (optional),
    --board, --epochs (baseline training), --verify-images, --threads and --work (the run
    folder)."""
    ap.add_argument("--smoke", action="store_true", help="tiny data and 1 epoch: proves it runs")
    ap.add_argument("--model", default=model)
    if width:
        ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--epochs", type=int, default=BASELINE_EPOCHS,
                    help="baseline training epochs")
    ap.add_argument("--train-images", type=int, default=TRAIN_IMAGES,
                    help="seeded training subset (0: all 54,000); validation gets a fifth as "
                         "many, the test set is always whole")
    ap.add_argument("--verify-images", type=image_count, default=20,
                    help="test images each build is verified on, or 'all'")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (1 each when two benchmark processes share 2 cores)")
    ap.add_argument("--work", type=Path, default=None,
                    help="run folder (default: results/tmp/<model>-<tag>, shared by the "
                         "method benchmarks so they start from one baseline)")


def image_count(text: str) -> int | str:
    """--verify-images: a number of images, or "all" (the whole test split); the parsing is
    fpgaslim's own (`hw.verify.parse_image_count`), worded as an argparse error."""
    from fpgaslim.hw.verify import parse_image_count

    try:
        return parse_image_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: the CPU recipe: a seeded 8,000-image training subset (1,600 validation) of Fashion-MNIST,
#: the whole 10,000-image test set, 10 baseline epochs. Sized so that every method benchmark
#: and every FINN build fits in about two hours on 2 cores; the paper-scale recipes are the
#: methods' "full" presets (GPU).
TRAIN_IMAGES = 8000
BASELINE_EPOCHS = 10


def work_dir(args: argparse.Namespace, name: str | None = None) -> Path:
    """The run folder: --work, else results/tmp/<name> (git-ignored), by default the one
    folder per model and tag that the method benchmarks share (one baseline, dynamic-pruning
    variants reused by the layer-fusion chain, FINN builds cached per variant and board)."""
    tag = "smoke" if args.smoke else "cpu"
    return args.work or RESULTS / "tmp" / (name or f"{args.model}-{tag}")


def recipe_data(smoke: bool, dataset: str = "fashion-mnist",
                train_images: int = TRAIN_IMAGES) -> Any:
    """The benchmark data set: the recipe's training subset and the whole test set, or 400
    train / 200 test images for a smoke run."""
    from fpgaslim.compress.data import load_dataset

    if smoke:
        return load_dataset(dataset, limit_train=400, limit_test=200)
    return load_dataset(dataset, limit_train=train_images or None)


def start(args: argparse.Namespace) -> tuple[str, Any]:
    """Begin a CPU-recipe benchmark: snapshot the machine (load average at the start), use
    --threads torch threads (2 unless told), load the data. Returns (tag: "smoke" or "cpu",
    data)."""
    import torch

    machine()
    torch.set_num_threads(getattr(args, "threads", 2))
    return ("smoke" if args.smoke else "cpu"), recipe_data(
        args.smoke, train_images=getattr(args, "train_images", TRAIN_IMAGES))


def dynamic_prune_settings(smoke: bool) -> Any:
    """Dynamic pruning as the benchmarks run it (the standalone benchmark and the first half
    of the layer-fusion chain must agree, since they share the variants): the "cpu" preset
    with FINN-friendly multiples of 4 channels, two iterations, the spec's search (measured
    bounds, gap 0.06 x the measured range: 5 trials) and 3 epochs per trial in one cosine
    cycle (no warm restart) to fit the CPU budget."""
    from fpgaslim.compress import dynamic_prune

    s = dynamic_prune.Settings.preset("cpu", channel_multiple=4, iterations=2, epochs=3,
                                      restart_every=0)
    if smoke:
        s = s.model_copy(update=dict(epochs=1, iterations=1, gap_fraction=0.3, patience=None,
                                     tolerance=5.0, calib_images=64))
    return s


def recipe_meta(args: argparse.Namespace, data: Any, epochs: int, t0: float,
                **more: Any) -> dict[str, Any]:
    """The meta every CPU-recipe result carries (data set, recipe, model, width, board, test
    images, baseline epochs, wall time since `t0` (time.perf_counter), torch threads), plus
    `more`."""
    import time

    import torch

    meta = {"dataset": data.name, "recipe": recipe(args.smoke), "model": args.model,
            "train_images": len(data.train), "val_images": len(data.val)}
    if hasattr(args, "width"):
        meta["width"] = args.width
    meta.update({"board": args.board, "test_images": len(data.test),
                 "baseline_epochs": epochs, **more,
                 "wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()})
    return meta


def train_recipe_baseline(run: Any, data: Any, model: str, width: float, epochs: int) -> Any:
    """Train (or resume) the baseline with the CPU recipe's SGD settings (lr 0.05, batch 64)."""
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.train import TrainSettings

    return train_baseline(run, data, BaselineSettings(
        model=model, width=width, train=TrainSettings(epochs=epochs, lr=0.05, batch_size=64)),
        progress=False)


def _figure(hw: Any, name: str) -> float | None:
    f = hw.resources.get(name)
    return None if f is None else f.value


def variant_row(record: Any, hw: Any = None, base: Any = None) -> dict[str, Any]:
    """One result row for a variant (`fpgaslim.compress.variants.Variant`).

    With `hw` (a `fpgaslim.hw.report.HardwareReport`): the FINN estimates (BRAM_18K, URAM,
    LUT, DSP, off-chip bytes/frame, fps, latency, HW layers, fits) and the bit-exact
    verification (None when the build did not verify). With `base` (the baseline Variant):
    the accuracy drop (percentage points) and the MACs reduction (%) against it.
    Sources of every field: `ROW_SOURCES`."""
    acc = record.accuracy
    row: dict[str, Any] = {
        "variant": record.id, "parent": record.parent, "method": record.method,
        "test_accuracy": acc.test, "val_accuracy": acc.val,
        "params": record.params, "macs": record.macs, "depth": record.depth,
    }
    if base is not None:
        both = acc.test is not None and base.accuracy.test is not None
        row["accuracy_drop"] = base.accuracy.test - acc.test if both else None
        row["macs_reduction_pct"] = (100.0 * (1 - record.macs / base.macs)
                                     if base.macs else None)
    if hw is not None:
        row.update({
            "BRAM_18K": _figure(hw, "BRAM_18K"), "URAM": _figure(hw, "URAM"),
            "LUT": _figure(hw, "LUT"), "DSP": _figure(hw, "DSP"),
            "weight_bits_onchip": hw.memory.weight_bits_onchip.value,
            "offchip_bytes_per_frame": hw.offchip.total_bytes.value,
            "est_fps": hw.throughput.fps.value,
            "est_latency_us": hw.throughput.latency_us.value,
            "hw_layers": len(hw.layers), "fits": hw.fits,
            "bit_exact": None if hw.verification is None else hw.verification.integer_exact,
        })
        v = hw.verification
        if v is not None:  # hardware accuracy (simulated) on the images verified
            row.update({"hw_accuracy": v.hw_accuracy, "verified_images": v.images,
                        "verified": v.verified})
    return row


def verification_cells(v: Any, prefix: str = "") -> dict[str, Any]:
    """A build's verification (`fpgaslim.hw.verify.Verification`, or None: the build did not
    verify) as row fields, every key starting with `prefix` (e.g. "u250_"): `verification`,
    the one-line reading of hw/verify.py (`summary()`: "bit-exact 20/20", "verified 9/20, 45
    near-ties", "MISMATCH ...") or "not verified"; `verified` (zero per-layer errors, every
    end-to-end difference explained by near-ties); `bit_exact` (every integer output equal);
    the images, how many differ end to end, and the per-layer errors and near-ties."""
    if v is None:
        return {f"{prefix}verification": "not verified", f"{prefix}verified": None,
                f"{prefix}bit_exact": None}
    lv = v.layers
    cells = {"verification": v.summary(),
             "verified": v.verified if v.verified is not None else v.integer_exact,
             "bit_exact": v.integer_exact, "verified_images": v.images,
             "mismatched_images": v.mismatched_images, "hw_accuracy": v.hw_accuracy,
             "layer_errors": None if lv is None else lv.errors,
             "near_ties": None if lv is None else lv.near_ties,
             "first_error_layer": None if lv is None else lv.first_error_layer}
    return {f"{prefix}{k}": val for k, val in cells.items()}


#: a table column: (header, row key) or (header, row key, format), where format is a format
#: spec ("{:.2f}"-style without braces, e.g. ".2f", ",.0f") or a function of the value; a
#: column with a format is right-aligned; None values print as "-"
Column = tuple[str, str] | tuple[str, str, str | Callable[[Any], str]]


def _cell(value: Any, fmt: str | Callable[[Any], str] | None) -> str:
    if value is None:
        return "-"
    if callable(fmt):
        return fmt(value)
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, fmt)
        except ValueError:  # e.g. "d" given a float
            pass
    return str(value).replace("|", "\\|")


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub Markdown table of `rows` with the given columns (see `Column`)."""
    cols = [(c[0], c[1], c[2] if len(c) > 2 else None) for c in columns]
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |",
             "|" + "|".join("---:" if f else "---" for _, _, f in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), f) for _, k, f in cols) + " |")
    return "\n".join(lines)


def save_results(name: str, meta: dict[str, Any], rows: list[dict[str, Any]], markdown: str,
                 *, extra: dict[str, Any] | None = None,
                 results_dir: str | Path = RESULTS) -> tuple[Path, Path]:
    """Write `<results_dir>/<name>.json` ({"meta", "rows", **extra}) and `<name>.md`, each
    atomically (`fpgaslim.core.atomic`). `meta` gets the machine description (`machine()`), the
    ISO date (UTC) and, unless it has its own, the row field sources (`ROW_SOURCES`); the
    Markdown gets a footer with the machine and the date. Returns (json path, md path)."""
    info = machine()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {**meta, "machine": info, "date": date}
    meta.setdefault("sources", ROW_SOURCES)
    stem = Path(results_dir) / name
    js = atomic_write_json(stem.with_name(stem.name + ".json"),
                           {"meta": meta, "rows": rows, **(extra or {})})
    footer = (f"\n\n_{date}; {info['cpu']}, {info['logical_cores']} logical cores, "
              f"{info['memory_gb']} GB; python {info['python']}, torch {info['torch']}, "
              f"finn-plus {info['finn_plus']}, brevitas {info['brevitas']}; load average "
              f"{info['load_avg_1m_at_start']} at start._\n")
    md = atomic_write_text(stem.with_name(stem.name + ".md"), markdown.rstrip() + footer)
    return js, md


def publish(name: str, meta: dict[str, Any], rows: list[dict[str, Any]], markdown: str,
            **kwargs: Any) -> tuple[Path, Path]:
    """`save_results`, then print the Markdown and where it was saved."""
    paths = save_results(name, meta, rows, markdown, **kwargs)
    print(markdown)
    print("saved " + " and ".join(map(str, paths)))
    return paths
