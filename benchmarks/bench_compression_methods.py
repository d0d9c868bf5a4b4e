"""The variants of the compression table, produced on one recipe (issue 20): baselines at
several seeds, every fpgaslim method from the first `peer_seeds` baselines, and the peer
(`magnitude-prune`, Torch-Pruning) at the MACs of each fpgaslim method's last variant, from the
same baseline and with its seed. Everything lands in one resumable run folder, so a rerun (or a
later session) continues where the last one stopped; `bench_compression` tabulates it.

Also the seed-to-seed spread of the baseline and the peer comparison: every margin is stated
against the spread, and a margin inside it is not a win.

    .venv/bin/python benchmarks/bench_compression_methods.py          # produce only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress.variants import RunDir, Variant  # noqa: E402

#: the issue's recipe: >= 16,000 training images, 15 baseline epochs, the whole test set
TRAIN_IMAGES = 16000
BASELINE_EPOCHS = 15
BASELINE_SEEDS = 3
PEER_SEEDS = 2
#: the peer's fine-tuning budget in epochs: one dynamic-pruning iteration's search (5 trials
#: of 3 epochs at the spec's gap), never more than an fpgaslim chain spends
PEER_EPOCHS = 15
FPGASLIM = ("dynamic-prune", "layer-fusion", "resconv", "layer-importance")
PEER = "magnitude-prune"
RUN_ROOT = Path.home() / ".cache" / "fpgaslim-bench"
#: the finished units' variants (record + checkpoint), committed: a session's machine may come
#: up without the run folder (seen in session 7: ~/.cache was empty, five hours of finished
#: baselines gone), so every finished unit is also kept here and restored from here
KEPT = common.RESULTS / "compression-units"


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(train_images=TRAIN_IMAGES, epochs=BASELINE_EPOCHS)
    ap.add_argument("--seeds", type=int, default=BASELINE_SEEDS,
                    help="baseline seeds (their spread is the noise every margin is held to)")
    ap.add_argument("--peer-seeds", type=int, default=PEER_SEEDS,
                    help="baselines the methods and the peer run from (seeds per side)")
    ap.add_argument("--peer-epochs", type=int, default=PEER_EPOCHS,
                    help="magnitude-prune's fine-tuning budget (epochs in all)")
    ap.add_argument("--resconv-rate", type=float, nargs="+", default=[0.45, 0.37],
                    help="ResConv-Prune's pruning rates, one variant each (the last one is "
                         "the method's leaf, which the peer is matched to); 0.45 prunes 9 of "
                         "ResNet-20's 19 layers (-53 %% MACs), 0.37 prunes 7 (-41 %%)")
    ap.add_argument("--keep", type=Path, default=KEPT,
                    help="folder of the finished units' variants (record + checkpoint), "
                         "restored into the run folder at the start and added to after each "
                         "unit; commit it (default: benchmarks/results/compression-units; "
                         "'none': off)")
    ap.add_argument("--no-produce", action="store_true",
                    help="only tabulate what the run folder holds")
    ap.add_argument("--unit", action="append", default=None, metavar="KIND:SEED",
                    help="produce only these units (repeatable), KIND one of "
                         f"{', '.join(UNITS)}, e.g. baseline:1 or resconv:0; two processes "
                         "(--threads 1 each) may share the run folder when their units are "
                         "disjoint. Default: every unit, in order")


#: what `produce` makes, per seed: the baseline, the dynamic pruning + layer fusion chain,
#: ResConv-Prune, learned layer importance, and the peer at the MACs of each of them
UNITS = ("baseline", "dp-fuse", "resconv", "layer-importance", "peer")


def units(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The (kind, seed) units to produce: --unit's, else all of them in order (every
    baseline seed, then each method and the peer from the first --peer-seeds baselines)."""
    if not args.unit:
        peer_seeds = range(min(args.peer_seeds, args.seeds))
        return ([("baseline", s) for s in range(args.seeds)]
                + [(k, s) for s in peer_seeds for k in UNITS[1:]])
    out = []
    for u in args.unit:
        kind, _, seed = u.partition(":")
        if kind not in UNITS or not seed.isdigit():
            raise SystemExit(f"--unit {u!r}: expected KIND:SEED with KIND one of "
                             f"{', '.join(UNITS)} and SEED a number, e.g. baseline:1")
        out.append((kind, int(seed)))
    return out


def run_folder(args: argparse.Namespace) -> Path:
    """--work, else ~/.cache/fpgaslim-bench/<model>-<images>-<epochs>[-smoke]: outside the
    work tree, so that a later session resumes it."""
    if args.work:
        return args.work
    tag = f"{args.model}-{args.train_images}img-{args.epochs}ep" + ("-smoke" if args.smoke else "")
    return RUN_ROOT / tag


def kept_folder(args: argparse.Namespace) -> Path | None:
    """--keep's folder for this recipe (a sub-folder named like the run folder), or None
    (--keep none; a smoke run keeps only in a --keep folder it is given: its variants are not
    results)."""
    if str(args.keep) == "none" or (args.smoke and args.keep == KEPT):
        return None
    return args.keep / run_folder(args).name


def _copy_variant(src: Path, dest: Path) -> None:
    """A variant folder's record, checkpoint and plots (no work folders, no training states,
    no builds), the record last: it is the commit point a RunDir looks for."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".pt", ".png") and not f.name.endswith("-state.pt"):
            shutil.copy2(f, dest / f.name)
    shutil.copy2(src / "record.json", dest / "record.json")


def restore(run: RunDir, kept: Path | None) -> list[str]:
    """Copy the kept variants the run folder lacks into it, in the order they were made (their
    records' `created`: a git checkout does not keep modification times, and a RunDir lists
    its variants by those). Returns their ids."""
    if kept is None or not kept.is_dir():
        return []
    found = [Variant.model_validate_json((d / "record.json").read_text(encoding="utf-8"))
             for d in kept.iterdir() if (d / "record.json").is_file()]
    new = [r.id for r in sorted(found, key=lambda r: r.created) if not run.has(r.id)]
    for vid in new:
        _copy_variant(kept / vid, run.variant_dir(vid))
    return new


def keep(run: RunDir, kept: Path | None) -> list[str]:
    """Copy every finished variant of the run folder that `kept` lacks into it. Returns their
    ids."""
    if kept is None:
        return []
    new = [vid for vid in run.ids() if not (kept / vid / "record.json").is_file()]
    for vid in new:
        _copy_variant(run.variant_dir(vid), kept / vid)
    return new


def baseline_id(seed: int) -> str:
    return "baseline" if seed == 0 else f"baseline-s{seed}"


def root_of(run: RunDir, rec: Variant) -> Variant:
    while rec.parent is not None:
        rec = run.record(rec.parent)
    return rec


def method_settings(smoke: bool, resconv_rate: list[float]) -> dict[str, Any]:
    """Every method's settings (ResConv-Prune at the first of its rates)."""
    from fpgaslim.compress import layer_fusion, layer_importance, resconv

    fusion = layer_fusion.Settings.preset("cpu")
    # retrained as long as it was sparse-trained: pruned at rate 0.45 (9 of 19 layers) and
    # retrained 2 epochs (the preset) the network got back to 86.3 % val of 91.8 % (seed 0);
    # the paper retrains at high pruning rates for as long as it trained
    rc = resconv.Settings.preset("cpu")
    rc = rc.model_copy(update={"rate": resconv_rate[0], "retrain_epochs": rc.sparse_epochs})
    # judged against the parent with the issue's 1-point budget: at the preset's tolerance 0
    # step 0's omega fine-tune (-1.0 point, seed 0) stops the loop before any unit goes
    li = layer_importance.Settings.preset("cpu").model_copy(update={"tolerance": 1.0})
    if smoke:
        fusion = fusion.model_copy(update=dict(short_epochs=1, long_epochs=1, max_removals=2,
                                               group_size=2))
        rc = rc.model_copy(update=dict(sparse_epochs=1, retrain_epochs=0, finetune_epochs=1,
                                       calibration_images=128))
        li = li.model_copy(update=dict(train_epochs=1, retrain_epochs=1, target_units=7,
                                       tolerance=100.0, timing_repeats=2))
    return {"dynamic-prune": common.dynamic_prune_settings(smoke), "layer-fusion": fusion,
            "resconv": rc, "layer-importance": li}


def leaves(variants: list[Variant]) -> list[Variant]:
    """The last variant of each method in a list (parents before children)."""
    last: dict[str, Variant] = {}
    for v in variants:
        last[v.method] = v
    return list(last.values())


def produce(run: RunDir, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train / resume everything the table needs (restore the kept units first), keeping each
    unit's variants as it finishes (`--keep`); returns the settings used (for the meta)."""
    from fpgaslim.compress import layer_importance, magnitude_prune, resconv
    from fpgaslim.compress.methods import get_method
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.train import TrainSettings

    epochs = 1 if args.smoke else args.epochs
    ms = method_settings(args.smoke, args.resconv_rate)
    peer = peer_settings(args)
    kept = kept_folder(args)
    for kind, seed in units(args):
        b = baseline_id(seed)
        if kind == "baseline":
            train_baseline(run, data, BaselineSettings(
                model=args.model, train=TrainSettings(epochs=epochs, lr=0.05, batch_size=64,
                                                      seed=seed)),
                variant_id=b, progress=False)
        elif not run.has(b):
            raise SystemExit(f"--unit {kind}:{seed} needs the baseline {b!r} in {run.path}; "
                             f"produce it first (--unit baseline:{seed})")
        elif kind == "dp-fuse":
            chain = get_method("dynamic-prune+fuse")  # the registered composite method
            chain.run(run, b, data, chain.Settings(**{  # each step at the unit's seed
                m: ms[m].model_copy(update={"seed": seed})
                for m in ("dynamic-prune", "layer-fusion")}), progress=False)
        elif kind == "resconv":
            for rate in args.resconv_rate:
                resconv.run(run, b, data, ms["resconv"].model_copy(
                    update={"seed": seed, "rate": rate}), progress=False)
        elif kind == "layer-importance":
            layer_importance.run(run, b, data, ms["layer-importance"].model_copy(
                update={"seed": seed}), progress=False)
        else:  # the peer at the MACs of every fpgaslim method's last variant made so far
            base_macs = run.record(b).macs
            made = [r for r in sorted(run.records(), key=lambda r: (r.id.count("."), r.created))
                    if r.method in FPGASLIM and root_of(run, r).id == b]
            for leaf in sorted(leaves(made), key=lambda r: r.macs):  # largest cut first
                cut = round(1 - leaf.macs / base_macs, 3)
                if 0.01 <= cut <= 0.95:
                    magnitude_prune.run(run, b, data, peer.model_copy(
                        update={"macs_reduction": cut, "seed": seed}), progress=False)
        added = keep(run, kept)
        print(f"unit {kind}:{seed} done" + (f"; kept in {kept}: {', '.join(added)}"
                                            if added else ""), flush=True)
    return settings_used(args)


def peer_settings(args: argparse.Namespace) -> Any:
    from fpgaslim.compress import magnitude_prune

    return magnitude_prune.Settings.preset("cpu", epochs=1 if args.smoke else args.peer_epochs)


def settings_used(args: argparse.Namespace) -> dict[str, Any]:
    """Every method's and the peer's settings, as the run's meta records them (also when a
    table is made from variants produced earlier, `--no-produce`)."""
    ms = method_settings(args.smoke, args.resconv_rate)
    return {"methods": {k: v.model_dump(mode="json", by_alias=True) for k, v in ms.items()},
            "peer": peer_settings(args).model_dump(mode="json")}


def spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The w4a4 baselines' seed-to-seed spread of test accuracy (measured)."""
    accs = [r["test_accuracy"] for r in rows if r["method"] == "baseline"
            and r["variant"].split("-s")[0] == "baseline" and r["bits"] == "w4a4"]
    if not accs:
        return {"seeds": 0}
    return {"seeds": len(accs), "test_accuracies": accs, "mean": statistics.mean(accs),
            "stdev": statistics.stdev(accs) if len(accs) > 1 else None,
            "range": max(accs) - min(accs)}


def peer_comparison(rows: list[dict[str, Any]], noise: dict[str, Any],
                    seeds_needed: int = PEER_SEEDS) -> list[dict[str, Any]]:
    """Each fpgaslim method's last variant against magnitude-prune at equal MACs (the MACs
    reduction within +-5 points, i.e. +-5 % of the baseline's MACs) from
    the same baseline, averaged over the seeds both sides have; the margin is held to the
    baseline's seed-to-seed range, and a target is met only on `seeds_needed` seeds (the
    issue's 2 per side): a verdict on fewer says so."""
    out = []
    by_root: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_root.setdefault(r["root"], []).append(r)
    pairs: dict[str, list[tuple[dict, dict]]] = {}
    for root, rs in by_root.items():
        peers = [r for r in rs if r["method"] == PEER]
        mine = [r for r in rs if r["method"] in FPGASLIM]
        for leaf in leaves_rows(mine):
            match = [p for p in peers if leaf["macs_reduction_pct"] is not None and
                     abs(p["macs_reduction_pct"] - leaf["macs_reduction_pct"]) <= 5.0]
            if match:
                p = min(match, key=lambda p: abs(p["macs"] - leaf["macs"]))
                pairs.setdefault(leaf["label"], []).append((leaf, p))
    rng = noise.get("range")
    for label, ps in pairs.items():
        diffs = [a["test_accuracy"] - b["test_accuracy"] for a, b in ps]
        mean = statistics.mean(diffs)
        verdict = ("win" if mean >= 0.5 and rng is not None and mean > rng else
                   "loss" if mean <= -0.5 and rng is not None and -mean > rng else
                   "inside the seed-to-seed spread" if rng is not None else "no spread measured")
        if len(ps) < seeds_needed:
            verdict += f" ({len(ps)} of {seeds_needed} seeds)"
        out.append({"method": label, "seeds": len(ps),
                    "variants": [(a["variant"], b["variant"]) for a, b in ps],
                    "macs_reduction_pct": [a["macs_reduction_pct"] for a, _ in ps],
                    "peer_macs_reduction_pct": [b["macs_reduction_pct"] for _, b in ps],
                    "test_accuracy": [a["test_accuracy"] for a, _ in ps],
                    "peer_test_accuracy": [b["test_accuracy"] for _, b in ps],
                    "mean_margin_points": mean, "baseline_seed_range": rng,
                    "target_met": (mean >= 0.5 and rng is not None and mean > rng
                                   and len(ps) >= seeds_needed),
                    "verdict": verdict})
    return out


def leaves_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        last[r["label"]] = r
    return list(last.values())


def issue_targets(rows: list[dict[str, Any]], noise: dict[str, Any]) -> dict[str, Any]:
    """The issue's accuracy/MACs targets on the seed-0 variants (drops against their own
    baseline), each next to the seed-to-seed range."""
    own = [r for r in rows if r["root"] == "baseline" and r["method"] in FPGASLIM
           and r["accuracy_drop"] is not None]
    ok = [r for r in own if r["accuracy_drop"] <= 1.0]
    best = max(ok, key=lambda r: r["macs_reduction_pct"], default=None)
    rc = [r for r in own if r["method"] == "resconv"]
    rc_ok = [r for r in rc if r["accuracy_drop"] <= 1.0 and r["macs_reduction_pct"] >= 40]
    return {
        "best_fpgaslim": None if best is None else best["variant"],
        "best_macs_reduction_pct": None if best is None else best["macs_reduction_pct"],
        "best_accuracy_drop": None if best is None else best["accuracy_drop"],
        "macs_65_at_1_point_met": best is not None and best["macs_reduction_pct"] >= 65,
        "resconv": [(r["variant"], r["accuracy_drop"], r["macs_reduction_pct"]) for r in rc],
        "resconv_within_1_point_at_40_pct_met": bool(rc_ok),
        "baseline_seed_range": noise.get("range"),
        "note": "a drop or margin smaller than the baseline's seed-to-seed range is noise",
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_recipe_args(ap, "resnet20", width=False)
    add_args(ap)
    a = ap.parse_args()
    _, d = common.start(a)
    r = RunDir(run_folder(a))
    restored = restore(r, kept_folder(a))
    if restored:
        print(f"restored from {kept_folder(a)}: {', '.join(restored)}", flush=True)
    produce(r, d, a)
