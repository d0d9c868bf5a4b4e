"""Compression table: one row per kept variant of every method in the shared ResNet-20 run
(Fashion-MNIST, CPU recipe), with its FINN estimates on Pynq-Z1 and U250, its max-fit fps on
Pynq-Z1, and the wall time it took to produce; plus a w2a2 baseline row, the issue's targets
checked against the best chained (dynamic pruning + layer fusion) variant, and the toolchain
speed figures (seconds per FINN build, verification and training images per second).

The recipe is issue 20's (`bench_compression_methods`): 16,000 training images, 15 baseline
epochs, all 10,000 test images; 3 baseline seeds for the seed-to-seed spread; every fpgaslim
method and the peer (magnitude-prune, Torch-Pruning, at each method's MACs) from 2 of them.
It produces the variants itself, in a run folder outside the work tree
(~/.cache/fpgaslim-bench/...), and resumes there; builds and folding searches are cached per
variant and board, so a rerun only does what is missing. FINN builds are made for the seed-0
chain; the other seeds' rows carry accuracy and MACs only. Several hours on 2 CPU cores.

    .venv/bin/python benchmarks/bench_compression.py            # the CPU recipe (hours)
    .venv/bin/python benchmarks/bench_compression.py --smoke    # proves it runs

Labels: accuracy "measured" (CPU, Brevitas, test split); params/MACs/depth counted on the
model; BRAM_18K/URAM/LUT/DSP/fps/off-chip bytes "FINN estimate"; max-fit fps "FINN estimate,
folding search"; wall times "measured" on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import groupby
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_compression_methods as recipe  # noqa: E402
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress.models.arch import BitWidths  # noqa: E402
from fpgaslim.compress.variants import RunDir, Variant  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402
from fpgaslim.hw.folding_search import load_maxfit, search_variant  # noqa: E402

BOARDS = ("pynq-z1", "u250")
COLUMNS = [("variant", "variant"), ("method", "label"), ("bits", "bits"),
           ("test acc %", "test_accuracy", ".2f"),
           ("HW acc % (simulated)", "hw_accuracy", ".2f"), ("HW images", "verified_images", ","),
           ("drop", "accuracy_drop", "+.2f"),
           ("params", "params", ","), ("MACs", "macs", ","), ("MACs -%", "macs_reduction_pct", ".1f"),
           ("depth", "depth", "d"), ("BRAM_18K", "BRAM_18K", ".0f"), ("URAM", "URAM", ".0f"),
           ("LUT", "LUT", ",.0f"), ("DSP", "DSP", ".0f"),
           ("off-chip B/frame", "offchip_bytes_per_frame", ",.0f"),
           ("fps Pynq-Z1", "fps_pynq-z1", ",.0f"), ("fps U250", "fps_u250", ",.0f"),
           ("max-fit fps Pynq-Z1", "maxfit_fps", ",.0f"),
           ("verification Pynq-Z1", "verification_pynq-z1"),
           ("verification U250", "verification_u250"), ("produce min", "produce_min", ".1f")]
SPEED_COLUMNS = [("variant", "variant"), ("board", "board"), ("prefix reused", "prefix_reused"),
                 ("build s", "build_wall_s", ".1f"), ("streamline s", "streamline_s", ".1f"),
                 ("verify img/s", "verify_images_per_s", ".1f")]


def label(run: RunDir, rec: Variant) -> str:
    """The method chain of a variant, e.g. "dynamic-prune > layer-fusion"."""
    chain: list[str] = []
    while rec.parent is not None:
        chain.append(rec.method)
        rec = run.record(rec.parent)
    return " > ".join(m for m, _ in groupby(reversed(chain))) or rec.method


def produce_seconds(run: RunDir, rec: Variant) -> float:
    """Wall time to produce a variant, in seconds: a baseline's training, or for a variant
    the fine-tuning and search from the baseline (its own timings plus its ancestors')."""
    own = lambda r: sum(v for k, v in r.timings.items()  # noqa: E731
                        if k.endswith("_s") and k != "total_s")
    if rec.parent is None:
        return own(rec)
    total = 0.0
    while rec.parent is not None:
        total += own(rec)
        rec = run.record(rec.parent)
    return total


def bits(rec: Variant) -> str:
    b = rec.arch.bits
    return f"w{b.weight}a{b.act}"


def kept(run: RunDir) -> list[Variant]:
    """Every variant of the run, parents before children."""
    return sorted(run.records(), key=lambda r: (r.id.count("."), r.created))


def table_row(run: RunDir, rec: Variant, base: Variant, reports: dict[str, Any],
              maxfit: float | None) -> dict[str, Any]:
    """`base`: the baseline the variant descends from (its own seed)."""
    row = common.variant_row(rec, reports.get("pynq-z1"), base)
    row.update({"label": label(run, rec), "bits": bits(rec), "maxfit_fps": maxfit,
                "produce_min": produce_seconds(run, rec) / 60,
                "root": recipe.root_of(run, rec).id})
    for board, rep in reports.items():
        row[f"fps_{board}"] = rep.throughput.fps.value
        row[f"fits_{board}"] = rep.fits
    row.update(board_verifications({b: rep.verification for b, rep in reports.items()}))
    return row


def board_verifications(verifications: dict[str, Any]) -> dict[str, Any]:
    """Every board's verification (board -> `Verification` or None) as row fields
    `<field>_<board>`: the reading ("bit-exact 10000/10000", "verified ..., n near-ties",
    "MISMATCH ...", "not verified"), verified, bit-exact, images, images differing end to
    end, per-layer errors and near-ties, the simulated accuracy. A row without builds (another
    seed's: accuracy and MACs only) says so per board."""
    out: dict[str, Any] = {}
    for board in BOARDS:
        if board not in verifications:
            out[f"verification_{board}"] = "no build (accuracy and MACs only)"
            continue
        for key, value in common.verification_cells(verifications[board]).items():
            out[f"{key}_{board}"] = value
    return out


def speed_rows(rec: Variant, reports: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for board, rep in reports.items():
        t = rep.timings
        n = rep.verification.images if rep.verification is not None else 0
        rows.append({"variant": rec.id, "board": board,
                     "prefix_reused": bool(t.get("prefix_reused")),
                     "build_wall_s": t.get("build_wall_s"),
                     "streamline_s": t.get("step_fpgaslim_streamline_s"),
                     "verify_images_per_s": (n / t["verify_exec_s"]
                                             if n and t.get("verify_exec_s") else None)})
    return rows


def targets(rows: list[dict[str, Any]], base_row: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for the best chained variant: the dynamic pruning + layer fusion
    variant with the most MACs removed at <= 1 point accuracy drop."""
    chained = [r for r in rows if r["label"].startswith("dynamic-prune")
               and "layer-fusion" in r["label"]]
    ok = [r for r in chained if r["accuracy_drop"] is not None and r["accuracy_drop"] <= 1.0]
    if not ok:
        return {"best_chained": None, "why": "no chained variant within 1 point of the baseline",
                "chained": [(r["variant"], r["accuracy_drop"]) for r in chained]}
    best = max(ok, key=lambda r: r["macs_reduction_pct"])
    bram = (100 * (1 - best["BRAM_18K"] / base_row["BRAM_18K"])
            if best.get("BRAM_18K") is not None and base_row.get("BRAM_18K") else None)
    speedup = (best["maxfit_fps"] / base_row["maxfit_fps"]
               if best.get("maxfit_fps") and base_row.get("maxfit_fps") else None)
    return {
        "best_chained": best["variant"],
        "macs_reduction_pct": best["macs_reduction_pct"], "macs_target_met":
            best["macs_reduction_pct"] >= 65,
        "bram_reduction_pct": bram, "bram_target_met": bram is not None and bram >= 50,
        "accuracy_drop": best["accuracy_drop"],
        "accuracy_target_met": best["accuracy_drop"] <= 1.0,
        "maxfit_speedup_pynq_z1": speedup,
        "maxfit_target_met": speedup is not None and speedup >= 2,
    }


def markdown(rows, speed, tgt, meta) -> str:
    def med(key: str, cold: bool) -> str:
        vals = [s[key] for s in speed if s[key] is not None and s["prefix_reused"] != cold]
        return f"{statistics.median(vals):.1f}" if vals else "-"

    return "\n".join([
        f"# Compression table: {meta['model']} on {meta['dataset']} ({meta['recipe']})", "",
        f"{meta['train_images']} training / {meta['val_images']} validation images, all "
        f"{meta['test_images']} test images. Accuracy: measured (CPU, Brevitas; decisions on "
        "validation, test reported); params/MACs/depth: counted on the model; BRAM_18K/URAM/"
        "LUT/DSP/off-chip bytes/fps: FINN estimate (finn-plus, default folding, Pynq-Z1 "
        "unless named); max-fit fps: FINN estimate, folding search within 85 % LUT / 100 % "
        "BRAM, URAM, DSP of the Pynq-Z1; verification: simulated (Python execution of the "
        "folded FINN graph vs Brevitas) on each board's build: bit-exact N/N (every integer "
        "output equal), verified k/N with near-ties (no per-layer error; every difference "
        "within float64 error of a rounding boundary), MISMATCH otherwise; produce min: measured wall time from the baseline "
        "(fine-tuning and search), a baseline's training time, this machine.", "",
        common.markdown_table(rows, COLUMNS), "",
        *([meta["verification_note"], ""] if meta.get("verification_note") else []),
        "## Targets (best chained variant)", "",
        "\n".join(f"- {k}: {v}" for k, v in tgt.items()), "",
        "## Toolchain speed (measured on this machine)", "",
        f"- FINN estimate build, full flow (streamlining included): median "
        f"{med('build_wall_s', True)} s; with the board-independent prefix reused: "
        f"median {med('build_wall_s', False)} s",
        f"- bit-exact verification: median {med('verify_images_per_s', True)} images/s",
        f"- QAT training of the baseline (batch 64, forward + backward + SGD step): median "
        f"{meta['train_images_per_s']:.0f} images/s ({meta['torch_threads']} torch threads)",
        f"- the {len(speed)} variant x board builds of this table one after another (a "
        f"sweep; the sum of their measured build times): "
        f"{sum(s['build_wall_s'] or 0 for s in speed) / 60:.1f} min; this run's folding "
        f"searches: {meta['maxfit_wall_s'] / 60:.1f} min (0 when cached)", "",
        common.markdown_table(speed, SPEED_COLUMNS), "",
        "## Seed-to-seed spread of the baseline (measured, test accuracy)", "",
        "\n".join(f"- {k}: {v}" for k, v in meta.get("spread", {}).items()), "",
        "## fpgaslim vs magnitude-prune (Torch-Pruning) at equal MACs (+-5 % of the "
        "baseline's)", "",
        "Margin: mean over seeds of (method - peer) test accuracy, in points; a win needs "
        ">= 0.5 points and more than the baseline's seed-to-seed range.", "",
        common.markdown_table(meta.get("peers", []), PEER_COLUMNS), "",
        "## Issue 20 targets (seed 0)", "",
        "\n".join(f"- {k}: {v}" for k, v in meta.get("issue_targets", {}).items())])


PEER_COLUMNS = [("method", "method"), ("seeds", "seeds", "d"),
                ("MACs -%", "macs_reduction_pct", lambda v: ", ".join(f"{x:.1f}" for x in v)),
                ("peer MACs -%", "peer_macs_reduction_pct",
                 lambda v: ", ".join(f"{x:.1f}" for x in v)),
                ("test acc %", "test_accuracy", lambda v: ", ".join(f"{x:.2f}" for x in v)),
                ("peer test acc %", "peer_test_accuracy",
                 lambda v: ", ".join(f"{x:.2f}" for x in v)),
                ("margin", "mean_margin_points", "+.2f"),
                ("seed range", "baseline_seed_range", ".2f"), ("verdict", "verdict")]


def training_images_per_s(model: Any, data: Any, steps: int = 20, repeats: int = 3) -> float:
    """QAT training speed of `model` (SGD steps of batch 64 on the training set, forward,
    backward and update), the median of `repeats` timed runs after one warm-up step."""
    import copy

    import torch
    from torch.nn.functional import cross_entropy

    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = data.train.tensors
    rates = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        for i in range(steps):
            sl = slice((i * 64) % (len(y) - 64), (i * 64) % (len(y) - 64) + 64)
            opt.zero_grad()
            cross_entropy(model(x[sl]), y[sl]).backward()
            opt.step()
        if r:  # the first run is the warm-up
            rates.append(steps * 64 / (time.perf_counter() - t))
    return statistics.median(rates)


def w2a2_baseline(run: RunDir, data: Any, model: str, epochs: int) -> Variant | None:
    """The same baseline at 2-bit weights and activations (first/last layers keep 8-bit), on
    the same recipe (lr 0.05, batch 64) with the training defaults fpgaslim gives every 2-bit
    model (`compress.train.defaults_for`: a warm-up epoch and gradient clipping, which is what
    kept lr 0.05 from sending it to NaN in its first epoch); None (with the reason printed) if
    its training diverges anyway."""
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.train import TrainSettings, with_defaults_for
    from fpgaslim.core.errors import TrainingDivergedError

    train = with_defaults_for(TrainSettings(epochs=epochs, lr=0.05, batch_size=64), 2, 2)
    try:
        return train_baseline(run, data, BaselineSettings(
            model=model, bits=BitWidths(weight=2, act=2), train=train),
            variant_id="baseline-w2a2", progress=False)
    except TrainingDivergedError as e:
        print(f"w2a2 row left out: {e}")
        return None


#: what the run of 2026-12-02 kept: its rows have the Pynq-Z1 verification only (bit_exact,
#: verified, verified_images, hw_accuracy of common.variant_row), the U250 builds none
UNKEPT = "verified (strict build; counts not kept, see note)"


def recorded_verifications(row: dict[str, Any]) -> dict[str, Any]:
    """The per-board verification fields of a row saved before they existed, from what the
    row holds: the Pynq-Z1 figures of `common.variant_row`; for U250 only that its build ran
    (`fps_u250`), which in that run means its strict verification passed (see
    `UNKEPT_NOTE`). A row that has them already is returned as it is."""
    if any(k.startswith("verification_") for k in row):
        return row
    out = dict(row)
    if "fps_pynq-z1" not in row:
        return {**out, **board_verifications({})}
    n = row.get("verified_images")
    if row.get("bit_exact"):
        reading = f"bit-exact {n}/{n}"
    elif row.get("verified"):
        reading = f"verified on {n} images (near-ties not kept)"
    else:
        reading = "MISMATCH (counts not kept)"
    out.update({"verification_pynq-z1": reading, "verified_pynq-z1": row.get("verified"),
                "bit_exact_pynq-z1": row.get("bit_exact"), "verified_images_pynq-z1": n,
                "hw_accuracy_pynq-z1": row.get("hw_accuracy")})
    if "fps_u250" in row:
        out.update({"verification_u250": UNKEPT, "verified_u250": True,
                    "bit_exact_u250": None, "verified_images_u250": n})
    return out


UNKEPT_NOTE = (
    "Note on 'verification U250': this run ({date}) saved the figures of the Pynq-Z1 "
    "verification only. Its U250 builds verified too: every build ran with "
    "BuildSettings.strict (default True: a difference that no near-tie explains raises "
    "VerificationError and stops the benchmark), on all {images:,} test images (their "
    "verification speed is in the toolchain table), and the run finished, so each passed; "
    "whether bit-exact or verified with near-ties, and the counts, were not saved. Filling "
    "them needs the {builds} variant x board builds again (`bench_compression.py "
    "--no-produce` restores the committed units and rebuilds; about an hour on 2 cores), "
    "not rerun here. Rows of other seeds have no builds.")


def render(path: Path) -> None:
    """Rewrite a saved run's Markdown and rows from its JSON (rows, toolchain speed, targets,
    spread, peers), keeping its machine and date: for a change of the table, not of the
    numbers. Rows saved before the per-board verification columns get them from what the run
    recorded (`recorded_verifications`)."""
    import json

    from fpgaslim.core.atomic import atomic_write_json, atomic_write_text

    saved = json.loads(path.read_text(encoding="utf-8"))
    meta = saved["meta"]
    rows = [recorded_verifications(r) for r in saved["rows"]]
    if any(r.get("verification_u250") == UNKEPT for r in rows):
        meta["verification_note"] = UNKEPT_NOTE.format(
            date=meta["date"], images=meta["test_images"], builds=len(saved["speed"]))
    saved["rows"] = rows
    # JSON turned the targets' (variant, drop, MACs -%) tuples into lists; print them as saved
    issue = {k: [tuple(x) if isinstance(x, list) else x for x in v] if isinstance(v, list)
             else v for k, v in saved.get("issue_targets", {}).items()}
    shown = {**meta, "spread": saved.get("spread", {}), "peers": saved.get("peers", []),
             "issue_targets": issue}
    atomic_write_json(path, saved)
    info = meta["machine"]
    footer = (f"\n\n_{meta['date']}; {info['cpu']}, {info['logical_cores']} logical cores, "
              f"{info['memory_gb']} GB; python {info['python']}, torch {info['torch']}, "
              f"finn-plus {info['finn_plus']}, brevitas {info['brevitas']}; load average "
              f"{info['load_avg_1m_at_start']} at start._\n")
    atomic_write_text(path.with_suffix(".md"), markdown(
        rows, saved["speed"], saved["targets"], shown).rstrip() + footer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_recipe_args(ap, "resnet20", width=False)
    recipe.add_args(ap)
    ap.set_defaults(verify_images="all")  # issue 16: every variant on the whole test set
    ap.add_argument("--no-w2a2", action="store_true", help="skip the w2a2 baseline row")
    ap.add_argument("--maxfit", choices=("targets", "leaves", "all", "none"), default="leaves",
                    help="folding searches for: the w4a4 baseline and the chained (dynamic "
                         "pruning + layer fusion) variants the targets need (targets), the "
                         "baselines and each method's last variant (leaves), every variant, "
                         "or none")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only rewrite the Markdown (and rows) of a saved run, e.g. "
                         "benchmarks/results/compression-cpu.json")
    args = ap.parse_args(argv)
    if args.render:
        render(args.render)
        return 0
    tag, data = common.start(args)
    epochs, verify = (1, 4) if args.smoke else (args.epochs, args.verify_images)
    run = RunDir(recipe.run_folder(args))
    t0 = time.perf_counter()
    recipe.restore(run, recipe.kept_folder(args))  # the committed finished units first
    base = common.train_recipe_baseline(run, data, args.model, 1.0, epochs)
    produced = recipe.settings_used(args) if args.no_produce else recipe.produce(run, data, args)
    if not args.no_w2a2:
        w2a2_baseline(run, data, args.model, epochs)
    recipe.keep(run, recipe.kept_folder(args))
    records = kept(run)
    parents = {r.parent for r in records}
    rows, speed, builds_s, maxfit_s = [], [], 0.0, 0.0
    for rec in records:
        root = recipe.root_of(run, rec)
        if root.id != base.id and rec.id != "baseline-w2a2":  # other seeds: accuracy, MACs
            rows.append(table_row(run, rec, root, {}, None))
            continue
        t = time.perf_counter()
        reports = {b: build_variant(run, rec.id, b, data=data, verify_images=verify)
                   for b in BOARDS}
        builds_s += time.perf_counter() - t
        maxfit = None
        if args.maxfit == "all" or (args.maxfit == "leaves" and (
                rec.parent is None or rec.id not in parents)) or (
                args.maxfit == "targets" and (rec.id == base.id or (
                    "layer-fusion" in label(run, rec) and "dynamic-prune" in label(run, rec)))):
            t = time.perf_counter()
            mf = load_maxfit(search_variant(run, rec.id, "pynq-z1"))
            maxfit_s += time.perf_counter() - t
            maxfit = None if mf.fps is None else mf.fps.value
        rows.append(table_row(run, rec, base, reports, maxfit))  # drop vs the w4a4 baseline
        speed += speed_rows(rec, reports)
    base_row = next(r for r in rows if r["variant"] == base.id)
    tgt = targets([r for r in rows if r["root"] == base.id], base_row)
    noise = recipe.spread(rows)
    peers = recipe.peer_comparison(rows, noise, args.peer_seeds)
    issue = recipe.issue_targets(rows, noise)
    meta = common.recipe_meta(
        args, data, epochs, t0, builds_wall_s=builds_s, maxfit_wall_s=maxfit_s,
        train_images_per_s=training_images_per_s(run.load_model(base.id), data),
        sources={**common.ROW_SOURCES, "maxfit_fps": "FINN estimate, folding search",
                 "produce_min/build_wall_s/verify_images_per_s/train_images_per_s":
                     "measured on this machine",
                 "spread/peers": "measured (CPU, Brevitas, test split)"},
        run_folder=str(run.path), seeds=args.seeds, peer_seeds=args.peer_seeds,
        peer_epochs=args.peer_epochs, settings=produced)
    shown = {**meta, "spread": noise, "peers": peers, "issue_targets": issue}
    common.publish(f"compression-{tag}", meta, rows, markdown(rows, speed, tgt, shown),
                   extra={"targets": tgt, "speed": speed, "spread": noise, "peers": peers,
                          "issue_targets": issue})
    return 0


if __name__ == "__main__":
    sys.exit(main())
