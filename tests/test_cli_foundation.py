"""CLI: train / export / info and clear errors for bad input."""

from __future__ import annotations

from click.testing import CliRunner

from fpgaslim.cli import main


def test_train_export_info(tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(run), "--epochs", "1", "--width", "0.5"])
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and "measured" in r.output
    r = CliRunner().invoke(main, ["export", str(run), "--check-images", "5"])
    assert r.exit_code == 0, r.output
    assert "argmax agreement 100%" in r.output
    r = CliRunner().invoke(main, ["info", str(run)])
    assert r.exit_code == 0 and "baseline" in r.output


def test_invalid_config_names_the_field(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: resnet8\ntrain:\n  epoch: 3\n")
    r = CliRunner().invoke(main, ["train", str(tmp_path / "run"), "--config", str(cfg)])
    assert r.exit_code == 2
    assert "train.epoch: unknown field" in r.output
    cfg.write_text("train: {lr: -1}\n")
    r = CliRunner().invoke(main, ["train", str(tmp_path / "run"), "--config", str(cfg)])
    assert r.exit_code == 2 and "train.lr" in r.output


def test_unknown_names_and_bits(tmp_path):
    r = CliRunner().invoke(main, ["train", str(tmp_path / "r"), "--model", "resnet9"])
    assert r.exit_code == 2 and "valid: cnv" in r.output
    r = CliRunner().invoke(main, ["train", str(tmp_path / "r"), "--bits", "w4"])
    assert r.exit_code == 2 and "wNaM" in r.output


def test_missing_dataset_is_a_clear_error_whatever_the_network_and_cache(tmp_path, monkeypatch):
    """Deterministic: every folder looked in is empty (the cache and FPGASLIM_DATA_DIR point
    into tmp_path) and the download is off in the config, so neither a network nor an earlier
    download on this machine can make MNIST appear; a download attempt would fail the test."""
    import urllib.request

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr("fpgaslim.compress.data.CACHE_DIR", tmp_path / "cache")
    monkeypatch.setenv("FPGASLIM_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setattr(urllib.request, "urlretrieve", no_download)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("data: {download: false}\n")
    r = CliRunner().invoke(main, ["train", str(tmp_path / "r"), "--config", str(cfg),
                                  "--dataset", "mnist", "--data-dir", str(tmp_path / "none")])
    assert r.exit_code == 2, r.output
    assert "dataset 'mnist' not found" in r.output and "(download disabled)" in r.output
    for looked in ("none", "env", "cache"):
        assert str(tmp_path / looked / "mnist") in r.output, r.output
