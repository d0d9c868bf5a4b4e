"""The build key decides "done": it changes with every input that changes a build's result and
with nothing else; a sweep whose build setting changed for one board redoes exactly those
builds, and a rerun redoes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from fpgaslim.hw.boards import get_board
from fpgaslim.hw.build import BuildSettings
from fpgaslim.hw.build_key import (UNKEYED, build_key, find_builds, is_done, read_record,
                                   write_record)

IDENTITY = {"model": {"checkpoint_sha256": "a" * 64},
            "data": {"dataset": "digits", "spec": "digits", "sha256": None}}
VERSION = {"finn-plus": "1.6.1", "fpgaslim": "fpgaslim-build/1", "prefix": "p/3"}
PYNQ = get_board("pynq-z1")


def _key(settings=None, board=PYNQ, identity=IDENTITY, images=3, kind="estimate", extra=None,
         version=VERSION):
    return build_key(identity, settings or BuildSettings(board=board), kind, "v",
                     images, extra, version).key


def test_key_changes_with_every_keyed_input():
    base = _key()
    keyed_changes = {
        "clock_ns": 5.0, "target_fps": 123, "weights": "external", "mvau_wwidth_max": 1024,
        "prefer_rtl": True, "verify_steps": False}
    for field, value in keyed_changes.items():
        assert _key(BuildSettings(**{field: value})) != base, field
    assert _key(board=get_board("kv260")) != base
    assert _key(identity={**IDENTITY, "model": {"checkpoint_sha256": "b" * 64}}) != base
    assert _key(identity={**IDENTITY, "data": {"dataset": "digits", "sha256": "x"}}) != base
    assert _key(images=4) != base and _key(images="all") != base
    assert _key(version={**VERSION, "finn-plus": "1.7.0"}) != base
    assert _key(version={**VERSION, "fpgaslim": "fpgaslim-build/2"}) != base
    assert _key(kind="maxfit-search") != base
    assert _key(kind="maxfit-search", extra={"budget": {"LUT": 50}}) != \
        _key(kind="maxfit-search", extra={"budget": {"LUT": 60}})


def test_key_ignores_what_does_not_change_a_result():
    base = _key()
    for field, value in {"timeout_s": 5.0, "strict": False, "streamline": "stock",
                         "synth": "yosys", "sim": "verilator", "layer_timeout_s": 9.0}.items():
        assert _key(BuildSettings(**{field: value})) == base, field
    # the board's default target spelt out, and the board by another of its names
    assert _key(BuildSettings(target_fps=PYNQ.default_target_fps)) == base
    assert _key(BuildSettings(board="Pynq_Z1")) == base
    # every name in UNKEYED is a BuildSettings field (a renamed field would slip into the key)
    assert UNKEYED < set(BuildSettings.model_fields)


def test_done_needs_the_same_key_and_the_result(tmp_path):
    k1 = build_key(IDENTITY, BuildSettings(), "estimate", "v", 3, version=VERSION)
    k2 = build_key(IDENTITY, BuildSettings(clock_ns=5.0), "estimate", "v", 3,
                   version=VERSION)
    folder = tmp_path / "variants" / "v" / "builds" / "anything-at-all"
    folder.mkdir(parents=True)
    write_record(folder, k1)
    assert not is_done(folder, k1)  # a record without its report is not a finished build
    (folder / "report.json").write_text("{}")
    assert is_done(folder, k1) and not is_done(folder, k2)
    rec = read_record(folder)
    assert rec.board == "pynq-z1" and rec.default and rec.result == "report.json"
    assert not build_key(IDENTITY, BuildSettings(clock_ns=5.0), "estimate", "v", 3,
                         version=VERSION).default

    class Run:  # the index reads records, whatever the folders are called
        def variant_dir(self, vid):
            return tmp_path / "variants" / vid

    (folder.parent / "u250-0123456789").mkdir()  # a name that says u250, a maxfit record
    k3 = build_key(IDENTITY, BuildSettings(), "maxfit-search", "v", 1, {"b": 1}, VERSION)
    write_record(folder.parent / "u250-0123456789", k3)
    (folder.parent / "u250-0123456789" / "maxfit.json").write_text("{}")
    assert [f.name for f, _ in find_builds(Run(), "v", "estimate")] == ["anything-at-all"]
    assert [f.name for f, _ in find_builds(Run(), "v", "maxfit-search", "pynq-z1")] == \
        ["u250-0123456789"]
    assert find_builds(Run(), "v", board="u250") == []


def test_build_by_board_is_validated():
    from fpgaslim.core.config import validate
    from fpgaslim.core.errors import ConfigError
    from fpgaslim.sweep import SweepConfig

    cfg = validate(SweepConfig, {"run_dir": "x", "boards": ["pynq-z1", "u250"],
                                 "build": {"clock_ns": 8.0},
                                 "build_by_board": {"Alveo U250": {"target_fps": 5}}})
    assert cfg.build_for("u250") == {"clock_ns": 8.0, "target_fps": 5}
    assert cfg.build_for("pynq-z1") == {"clock_ns": 8.0}
    for bad, match in (({"kv260": {}}, "not one of the sweep's boards"),
                       ({"nexys": {}}, "nexys"), ({"u250": {"clok_ns": 5}}, "clok_ns"),
                       ({"u250": {"board": "kv260"}}, "names the board")):
        with pytest.raises(ConfigError, match=match):
            validate(SweepConfig, {"run_dir": "x", "boards": ["pynq-z1", "u250"],
                                   "build_by_board": bad})


def test_folder_names_of_existing_builds_stay_as_they_were():
    """The names existing run folders have (computed by the code before the board travelled
    inside the settings): a rename would lose every user's builds."""
    from fpgaslim.hw.build_key import build_dir_for

    class Run:
        def variant_dir(self, vid):
            return Path("/r") / vid

    names = {"pynq-z1": {}, "u250": {"board": "u250"},
             "kv260-909b3c7958": {"board": "kv260", "prefer_rtl": True, "clock_ns": 5.0},
             "pynq-z1-fe68e788c1": {"mvau_wwidth_max": 1024},
             "pynq-z1-307f14c107": {"prefer_rtl": True},
             "pynq-z1-047a7f8504": {"target_fps": 500},
             "pynq-z1-a047317890": {"verify_steps": False},
             "pynq-z1-665afae38e": {"weights": "external"}}
    for name, fields in names.items():
        assert build_dir_for(Run(), "v", BuildSettings(**fields)).name == name, fields
    # and the keys of their records (a changed key rebuilds everything once)
    assert _key(BuildSettings(), images=3) == build_key(
        IDENTITY, BuildSettings(board="Pynq_Z1", target_fps=10_000, streamline="stock"),
        "estimate", "v", 3, None, VERSION).key


def test_find_build_one_rule_default_else_newest(tmp_path):
    """verify, compare, the bundle and the optimal folding's start graph all take the build
    find_build / choose_build names: the newest default-settings one, else the newest; with
    settings, the newest with exactly those keyed settings (a legacy report's too)."""
    from fpgaslim.hw.build_key import find_build

    class Run:
        def variant_dir(self, vid):
            return tmp_path / "variants" / vid

    root = tmp_path / "variants" / "v" / "builds"
    fast, rtl = BuildSettings(target_fps=500), BuildSettings(prefer_rtl=True)

    def built(folder: str, settings: BuildSettings, age: int) -> None:
        (root / folder).mkdir(parents=True)
        (root / folder / "report.json").write_text("{}")
        write_record(root / folder, build_key(IDENTITY, settings, "estimate", "v", 1,
                                              version=VERSION))
        os.utime(root / folder / "report.json", (1e9 + age, 1e9 + age))

    assert find_build(Run(), "v", PYNQ) is None
    built("a", fast, 1)
    built("b", rtl, 2)
    assert find_build(Run(), "v", PYNQ)[0].name == "b"  # no default: the newest
    built("c", BuildSettings(), 0)
    assert find_build(Run(), "v", PYNQ)[0].name == "c"  # the default, though older
    assert find_build(Run(), "v", "pynq-z1")[0].name == "c"  # a record's board name
    assert find_build(Run(), "v", PYNQ, fast)[0].name == "a"
    assert find_build(Run(), "v", PYNQ, BuildSettings(target_fps=500, timeout_s=1))[0].name \
        == "a"  # unkeyed settings do not matter
    assert find_build(Run(), "v", PYNQ, BuildSettings(clock_ns=3.0)) is None
    assert find_build(Run(), "v", get_board("u250")) is None
    # a report from before build records: found by the settings written in it
    (root / "old").mkdir()
    (root / "old" / "report.json").write_text(json.dumps(
        {"board": "pynq-z1", "settings": {"board": "pynq-z1", "clock_ns": 7.0}}))
    found = find_build(Run(), "v", PYNQ, BuildSettings(clock_ns=7.0))
    assert found[0].name == "old" and found[1].key == ""


# --------------------------------------------------------------------------- a real sweep
SWEEP = {
    "baseline": {"data": {"dataset": "digits"}, "model": "resnet8", "width": 0.5,
                 "train": {"epochs": 1, "lr": 0.05, "batch_size": 32}},
    "methods": [{"method": "magnitude-prune", "settings": {"macs_reduction": 0.3, "steps": 1,
                                                          "epochs": 1}}],
    "boards": ["pynq-z1", "kv260"],
    "verify_images": 2,
    "parallel": {"workers": 2},
}


def _records(run_dir: Path) -> dict[tuple[str, str, str], tuple[str, int]]:
    """(variant, board, folder) -> (key, mtime of the report) of every estimate build."""
    out = {}
    for path in run_dir.glob("variants/*/builds/*/build.json"):
        rec = json.loads(path.read_text())
        report = path.with_name("report.json")
        out[rec["variant"], rec["board"], path.parent.name] = (rec["key"],
                                                               os.stat(report).st_mtime_ns)
    return out


def _compared(result) -> set[str]:
    """The report files the sweep's comparison shows."""
    rows = json.loads(Path(result.report["json"]).read_text())["rows"]
    return {r["report"] for r in rows}


@pytest.mark.slow
def test_sweep_redoes_exactly_the_builds_a_changed_setting_changes(tmp_path):
    from fpgaslim.sweep import load_sweep, run_sweep

    def sweep(**over):
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump({**SWEEP, "run_dir": str(tmp_path / "run"), **over}))
        return run_sweep(load_sweep(path), progress=False)

    first = sweep()
    assert len(first.variants) == 2 and first.work_done["builds"] == 4, first
    assert not first.failures
    before = _records(tmp_path / "run")
    assert len(before) == 4

    # one setting changed for one board: its two builds (one per variant) again, nothing else
    changed = sweep(build_by_board={"kv260": {"clock_ns": 5.0}})
    assert changed.work_done == {"baseline": 0, "methods": 0, "builds": 2, "maxfit": 0}
    after = _records(tmp_path / "run")
    new = {k: v for k, v in after.items() if before.get(k) != v}
    assert {(v, b) for v, b, _ in new} == {(v, "kv260") for v in first.variants}
    assert all(before[k] == after[k] for k in before)  # the other builds untouched
    for vid in first.variants:
        report = json.loads(Path(changed.builds[f"{vid}@kv260"]).read_text())
        assert report["settings"]["clock_ns"] == 5.0
        assert report["verification"]["integer_exact"] is True
    assert _compared(changed) == set(changed.builds.values())  # the sweep's own builds

    # the same file again, and back to the first settings: nothing to do
    assert all(v == 0 for v in sweep(build_by_board={"kv260": {"clock_ns": 5.0}}
                                     ).work_done.values())
    again = sweep()
    assert all(v == 0 for v in again.work_done.values()), again.work_done
    assert _records(tmp_path / "run") == after
    assert _compared(again) == set(first.builds.values())
