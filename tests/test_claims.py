"""`make claims` (benchmarks/claims.py): every measured figure of README.md and docs/ is checked
against a committed result file, and the check fails for the right reasons: a changed figure,
a figure without a source, a source that does not hold it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("claims", ROOT / "benchmarks" / "claims.py")
claims = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("claims", claims)
_spec.loader.exec_module(claims)


def test_the_real_docs_pass():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    n = int(re.fullmatch(r"(\d+) figures checked\n", proc.stdout).group(1))
    assert n >= 200, proc.stdout  # README's table and the docs' tables, not a handful


def test_every_page_is_checked_and_the_readme_has_sourced_figures():
    files = claims.doc_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "benchmarks.md" in files
    checked, problems = claims.check_text((ROOT / "README.md").read_text(encoding="utf-8"),
                                          "README.md")
    assert problems == [] and checked >= 15


def test_a_changed_figure_fails():
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    marked = "90.91<!-- claim: compression-cpu.json:rows[variant=baseline].test_accuracy -->"
    assert marked in text
    assert claims.check_text(text, "benchmarks.md")[1] == []
    checked, problems = claims.check_text(text.replace(marked, marked.replace("90.91", "90.95"), 1),
                                          "benchmarks.md")
    assert len(problems) == 1, problems
    assert "is 90.91, the text says 90.95" in problems[0].why, problems[0]
    # a figure rounds to its own decimals: 90.9 is right, 91 is not (0 decimals: 90.91 -> 91
    # is right too), 90.90 is not
    for shown, ok in (("90.9", True), ("91", True), ("90.90", False), ("90.92", False)):
        line = marked.replace("90.91", shown)
        assert (claims.check_text(line, "t")[1] == []) is ok, shown


def test_a_figure_without_a_source_fails_and_what_is_not_a_figure():
    checked, problems = claims.check_text("The build ran at 1,234 fps and 12.5 % LUT, a drop "
                                          "of -0.3 points, 72-80 % fewer MACs.\n", "t")
    assert checked == 0 and [p.text for p in problems] == ["1,234 fps", "12.5 %", "-0.3 points",
                                                           "80 %"]
    not_figures = ("a budget of LUT <= 85 % and a target >= 65 %; `--epochs 12.5` in code;\n"
                   "ResNet-20 w4a4 on 3x32x32 at 1/255, finn-plus 1.6.1, Python 3.11, "
                   "[a link](results/x-1.5.md)\n```\nfps 123.4\n```\n<!-- 99.9 % -->\n")
    assert claims.check_text(not_figures, "t") == (0, [])


def test_sources_that_do_not_hold_the_figure_fail():
    bad = {
        "1.5<!-- claim: nowhere.json:a -->": "no result file",
        "1.5<!-- claim: compression-cpu.json:rows[variant=nope].macs -->": "has no",
        "1.5<!-- claim: compression-cpu.json:rows[variant=baseline].method -->": "not a number",
        "1.5<!-- claim: compression-cpu.json -->": "a claim is FILE.json:PATH",
        "53,201<!-- given: hw/boards.toml -->": "does not hold 53,201",
        "7 %<!-- given: hw/no_such_file.toml -->": "not a file of this repository",
        "7 %<!-- given: -->": "needs its source",
    }
    for text, why in bad.items():
        problems = claims.check_text(text, "t")[1]
        assert len(problems) == 1 and why in problems[0].why, (text, problems)
    good = ["53,200<!-- given: hw/boards.toml (DS190) -->",
            "about 3,000 fps<!-- given: finn-examples' published figure -->",
            "31.0 M<!-- claim: compression-cpu.json:rows[variant=baseline].macs -->",
            "0.04 points<!-- claim: compression-cpu.json:rows[variant=baseline.dp1.lf1]"
            ".accuracy_drop * -1 -->"]
    for text in good:
        assert claims.check_text(text, "t") == (1, []), text


def test_the_cli_reference_lists_every_command():
    pytest.importorskip("mkdocs")
    import click

    hook_spec = importlib.util.spec_from_file_location(
        "reference", ROOT / "docs" / "_hooks" / "reference.py")
    hook = importlib.util.module_from_spec(hook_spec)
    hook_spec.loader.exec_module(hook)
    from fpgaslim.cli import main

    text = hook.cli_reference()
    paths = []

    def walk(cmd, path):
        paths.append(path)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(None):
                walk(cmd.get_command(None, name), f"{path} {name}")

    walk(main, "fpgaslim")
    for path in paths + ["fpgaslim-board"]:
        assert f"## `{path}`" in text, path
    assert "--verify-images" in text and "--topk" in text
