"""Check every measured figure in README.md and docs/*.md against a committed result file.

A figure is a number a reader takes as a result: one with a decimal point or a thousands
comma (90.91, 128,678), an integer followed by a unit (%, fps, images/s, s, min, MB, points),
or any number directly followed by a mark. Outside code (fenced blocks, `inline code`), other
HTML comments and link targets, every figure must be followed on its line, before the next
figure, by one of

    <!-- claim: FILE.json:PATH [*F | /F] -->
        a measured figure. FILE is a path of the repository or a name in benchmarks/results/;
        PATH is keys `a.b`, list items `[3]`, `[key=value]` or `[k=v&k2=v2]`, e.g.
        `rows[variant=baseline.dp1.lf2].test_accuracy`; the value there, times or divided by
        F, must round to the figure as written (to its decimals; a trailing k, M, G multiplies);
    <!-- given: SOURCE -->
        a figure that is not measured here (a board's capacity, a published anchor, a
        default): SOURCE says where it comes from; when SOURCE starts with a file of this
        repository (or of benchmarks/results/), that file must exist and hold the number.

A number after a comparison sign (<= 85 %, >= 65 %: a budget or a target) is not a figure.
Prints `N figures checked` and exits 1 on a figure without a source or with another value.

    python benchmarks/claims.py [FILE.md ...]
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+)"
# a number not glued to a word, a path or a version (ResNet-20, w4a4, 1/255, 1.6.1); the
# end of a range (72-80 %) is a figure
_FIGURE = re.compile(
    r"(?<![\w.,/+])(?<![A-Za-z_]-)(?<!--)(?P<num>" + _NUM + r")(?!\d|\.\d|,\d|\w*/\d)"
    r"(?P<unit>\s?(?:%|fps\b|images/s\b|s\b|min\b|MB\b|GB\b|points?\b|k\b|M\b|G\b)|x\b)?")
_MARK = re.compile(r"<!--\s*(claim|given):\s*(.*?)\s*-->")
_VERSIONED = ("python", "torch", "finn-plus", "qonnx", "brevitas", "onnx", "verilator", "yosys",
              "vivado", "numpy", "mkdocs", "version", "release", "issue", "issues")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text!r}: {self.why}"


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


def _prose(text: str) -> str:
    """The text with code, comments other than marks and link targets blanked out (same
    length, so offsets and line numbers stay)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", _blank, text, flags=re.DOTALL | re.MULTILINE)
    text = re.sub(r"`[^`\n]*`", _blank, text)
    text = re.sub(r"<!--(?!\s*(?:claim|given):).*?-->", _blank, text, flags=re.DOTALL)
    text = re.sub(r"\]\([^)\s]*\)", _blank, text)
    return text


def _is_figure(m: re.Match, prose: str) -> bool:
    num = m.group("num")
    before = prose[max(0, m.start() - 12):m.start()].rstrip()
    if re.search(r"(<=|>=|[<>≤≥])$", before):
        return False  # a budget or a target
    word = re.search(r"([\w\-]+)\s*$", before)
    if word and word.group(1).lower() in _VERSIONED:
        return False  # a version or an issue number
    if re.match(r"\s*<!--\s*(claim|given):", prose[m.end():m.end() + 40]):
        return True  # any number marked as a figure is checked as one
    return "." in num or "," in num or bool(m.group("unit") and m.group("unit").strip())


def lookup(doc, path: str):
    """`a.b[2].c[key=value].d` in parsed JSON."""
    for part in re.findall(r"\[[^\]]*\]|[^.\[\]]+", path):
        if part.startswith("["):
            inner = part[1:-1]
            if "=" in inner:  # [key=value] or [key=value&key2=value2]
                conds = [c.split("=", 1) for c in inner.split("&")]
                hits = [x for x in doc if isinstance(x, dict)
                        and all(str(x.get(k)) == v for k, v in conds)]
                if len(hits) != 1:
                    raise KeyError(f"{len(hits)} items with {inner}")
                doc = hits[0]
            else:
                doc = doc[int(inner)]
        else:
            doc = doc[part]
    return doc


def _value(num: str, unit: str | None) -> tuple[float, float]:
    """(value, half a unit of its last digit) of a figure as written."""
    digits = num.replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get((unit or "").strip(), 1.0)
    return float(digits) * scale, 0.5 * 10 ** -decimals * scale


def check_claim(spec: str, num: str, unit: str | None, root: Path) -> str | None:
    """None when the figure matches its source, else why not."""
    m = re.fullmatch(r"(\S+?\.json):(.+?)(?:\s+([*/])\s*([\d.e+-]+))?", spec)
    if not m:
        return f"a claim is FILE.json:PATH [*F|/F], not {spec!r}"
    file, path, op, factor = m.groups()
    src = root / file if (root / file).is_file() else root / "benchmarks" / "results" / file
    if not src.is_file():
        return f"no result file {file} (nor benchmarks/results/{file})"
    try:
        found = lookup(json.loads(src.read_text(encoding="utf-8")), path)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        return f"{file} has no {path} ({e})"
    if isinstance(found, bool) or not isinstance(found, (int, float)):
        return f"{file}:{path} is {found!r}, not a number"
    if op:
        found = found * float(factor) if op == "*" else found / float(factor)
    want, tol = _value(num, unit)
    if abs(found - want) > tol * (1 + 1e-9) + 1e-12:
        return f"{file}:{path} is {found:g}, the text says {num}"
    return None


def check_given(source: str, num: str, root: Path) -> str | None:
    if not source:
        return "a given figure needs its source"
    first = source.split()[0].rstrip(",;:")
    if "/" in first or first.endswith((".toml", ".py", ".md", ".json", ".yaml")):
        path = root / first.split(":")[0]
        if not path.is_file():
            path = root / "benchmarks" / "results" / first.split(":")[0]
        if not path.is_file():
            return f"its source {first} is not a file of this repository"
        want = float(num.lstrip("+-").replace(",", ""))
        held = {float(n.replace(",", "").replace("_", "")) for n in
                re.findall(r"\d(?:[\d_]|,(?=\d{3}))*(?:\.\d+)?", path.read_text(encoding="utf-8"))}
        if want not in held:
            return f"{first} does not hold {num}"
    return None


def check_text(text: str, name: str, root: Path = ROOT) -> tuple[int, list[Problem]]:
    """(figures checked, problems) of one Markdown text."""
    prose = _prose(text)
    marks = list(_MARK.finditer(prose))
    inside = [(k.start(), k.end()) for k in marks]
    figures = [m for m in _FIGURE.finditer(prose) if _is_figure(m, prose)
               and not any(a <= m.start() < b for a, b in inside)]
    problems: list[Problem] = []
    checked = 0

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    for i, fig in enumerate(figures):
        end = figures[i + 1].start() if i + 1 < len(figures) else len(prose)
        nl = prose.find("\n", fig.end())
        end = min(end, nl if nl >= 0 else len(prose))
        mark = next((k for k in marks if fig.end() <= k.start() < end), None)
        shown = fig.group(0).strip()
        if mark is None:
            problems.append(Problem(name, line_of(fig.start()), shown,
                                    "no <!-- claim: ... --> or <!-- given: ... --> after it"))
            continue
        kind, spec = mark.groups()
        why = (check_claim(spec, fig.group("num"), fig.group("unit"), root) if kind == "claim"
               else check_given(spec, fig.group("num"), root))
        if why:
            problems.append(Problem(name, line_of(fig.start()), shown, why))
        else:
            checked += 1
    return checked, problems


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = [Path(a).resolve() for a in args] or doc_files()
    total, problems = 0, []
    for f in files:
        if not f.is_file() or f.is_symlink():
            continue
        name = str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f)
        n, p = check_text(f.read_text(encoding="utf-8"), name)
        total += n
        problems += p
    for p in problems:
        print(p)
    print(f"{total} figures checked" + (f", {len(problems)} without a source or different"
                                         if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
