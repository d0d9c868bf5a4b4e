"""Regenerate every benchmark result under benchmarks/results/, one script after the other.

    .venv/bin/python benchmarks/run_all.py             # the CPU recipe (hours)
    .venv/bin/python benchmarks/run_all.py --smoke     # proves every script runs (not results)
    .venv/bin/python benchmarks/run_all.py --only resconv,deploy --dry-run

--smoke passes through to the scripts that have it and shrinks the others (1 epoch, few
images, one board); their outputs get a "-smoke" name so they never replace real results.
A failing script stops the sequence (subprocess.run(..., check=True)).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ("layer_fusion", "dynamic_prune", "layer_importance", "compression", "resconv",
         "finn_build", "deploy", "compare")
# run folders (with FINN builds) that the recipe scripts leave for bench_compare: one per
# model, shared by the method benchmarks (common.work_dir)
RUN_DIRS = ("resnet20-{tag}", "resnet8-{tag}")


def commands(smoke: bool) -> dict[str, list[str]]:
    """The command line of every benchmark, by name, in the order they run."""
    tag = "smoke" if smoke else "cpu"
    py = [sys.executable]
    flag = ["--smoke"] if smoke else []
    cmds = {name: [*py, str(HERE / f"bench_{name}.py"), *flag]
            for name in ("dynamic_prune", "layer_fusion", "layer_importance", "compression",
                         "resconv")}
    cmds["finn_build"] = [*py, str(HERE / "bench_finn_build.py"),
                          *(["--epochs", "1", "--images", "4", "--boards", "pynq-z1"]
                            if smoke else [])]
    cmds["deploy"] = [*py, str(HERE / "bench_deploy.py"),
                      *(["--models", "cnv", "--epochs", "1", "--iterations", "1",
                         "--out", str(RESULTS / "deploy-smoke.json")] if smoke else [])]
    cmds["compare"] = [*py, str(HERE / "bench_compare.py"),
                       *(str(RESULTS / "tmp" / d.format(tag=tag)) for d in RUN_DIRS),
                       "--out", str(RESULTS / "tmp" / f"compare-{tag}"),
                       *(["--repeat", "1", "--json", str(RESULTS / "compare-smoke.json")]
                         if smoke else [])]
    return {name: cmds[name] for name in ORDER}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny data and 1 epoch in every script: proves they run")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated subset of: {','.join(ORDER)}")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    cmds = commands(args.smoke)
    names = list(ORDER) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in cmds]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {','.join(ORDER)}")
    for name in names:
        print(f"== {name}: {shlex.join(cmds[name])}", flush=True)
        if not args.dry_run:
            subprocess.run(cmds[name], check=True, cwd=HERE.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
