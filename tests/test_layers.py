"""The package's layers only look down, and no two modules import each other (issue 15).

Every import is counted, also those inside functions and under TYPE_CHECKING: a lower layer
that imports a higher one "only lazily" still cannot be understood, tested or reused without it.
Layers, bottom to top: core (errors, atomic writes, config) < compress (models, data, methods)
< hw (export, FINN builds, verification, reports) < compare and deploy (siblings that read
records and builds) < the front (CLI, Python API, sweep, demo)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fpgaslim": "fpgaslim", "fpgaslim.core": "fpgaslim/core",
            "fpgaslim.compare": "fpgaslim/compare", "fpgaslim.compress": "compress",
            "fpgaslim.compress.models": "compress/models", "fpgaslim.hw": "hw",
            "fpgaslim.hw.sim": "hw/sim", "fpgaslim.hw.rtl": "hw/rtl",
            "fpgaslim.deploy": "deploy"}
RANK = {"core": 0, "compress": 1, "hw": 2, "compare": 3, "deploy": 3, "front": 4}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else "front"


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in sorted((ROOT / folder).glob("*.py")):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = (".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1])
                        if node.level else "")
                target = ".".join(p for p in (base, node.module or "") if p)
                cands = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            # the deepest project module each import names (a package's __init__ otherwise)
            found |= {c for c in cands if c in mods and c != name
                      and not any(o != c and o.startswith(c + ".") and o in mods for o in cands)}
        edges[name] = found
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            la, lb = layer(a), layer(b)
            if la != lb and RANK[lb] >= RANK[la]:
                bad.append(f"{a} ({la}) imports {b} ({lb})")
    return bad


def test_the_walk_sees_every_package():
    mods = modules()
    assert {layer(m) for m in mods} == set(RANK)
    edges = imports(mods)
    # it follows imports inside functions too: the CLI imports the sweep only when it runs one
    assert "fpgaslim.sweep" in edges["fpgaslim.cli"]
    assert "fpgaslim.core.errors" in edges["fpgaslim.hw.build"]


def test_no_import_cycle():
    assert cycles(imports(modules())) == []


def test_layers_only_look_down():
    assert upward(imports(modules())) == []


def test_the_checks_can_fail():
    edges = {"fpgaslim.compress.a": {"fpgaslim.hw.b"}, "fpgaslim.hw.b": {"fpgaslim.compress.a"}}
    assert cycles(edges) == [["fpgaslim.compress.a", "fpgaslim.hw.b"]]
    assert upward(edges) == ["fpgaslim.compress.a (compress) imports fpgaslim.hw.b (hw)"]
