"""Bundle archives: the manifest catches any changed byte, and unpacking refuses every way an
archive could write outside its target folder."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from fpgaslim.deploy.manifest import pack, unpack, verify_manifest, write_manifest
from fpgaslim.core.errors import BundleError


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    root = tmp_path / "stage"
    (root / "graph").mkdir(parents=True)
    (root / "bundle.json").write_text(json.dumps({"variant": "v"}))
    (root / "graph" / "dataflow.onnx").write_bytes(bytes(range(256)) * 8)
    write_manifest(root, {"variant": "v"})
    return root


def test_roundtrip_and_manifest(bundle_dir: Path, tmp_path: Path) -> None:
    archive = pack(bundle_dir, tmp_path / "b.tar.gz")
    manifest = unpack(archive, tmp_path / "out")
    assert set(manifest["files"]) == {"bundle.json", "graph/dataflow.onnx"}
    assert (tmp_path / "out" / "graph" / "dataflow.onnx").read_bytes() == \
        (bundle_dir / "graph" / "dataflow.onnx").read_bytes()
    # same content -> same archive bytes (owner, mtime and gzip time are normalised)
    assert pack(bundle_dir, tmp_path / "c.tar.gz").read_bytes() == archive.read_bytes()


def test_tampered_file_fails(bundle_dir: Path, tmp_path: Path) -> None:
    data = bytearray((bundle_dir / "graph" / "dataflow.onnx").read_bytes())
    data[100] ^= 1  # one flipped bit, same size
    (bundle_dir / "graph" / "dataflow.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="graph/dataflow.onnx does not match"):
        verify_manifest(bundle_dir)
    with pytest.raises(BundleError, match="does not match"):
        unpack(pack(bundle_dir, tmp_path / "t.tar.gz"), tmp_path / "out")


def test_missing_and_unlisted_files_fail(bundle_dir: Path) -> None:
    (bundle_dir / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="does not list: extra.py"):
        verify_manifest(bundle_dir)
    (bundle_dir / "extra.py").unlink()
    (bundle_dir / "bundle.json").unlink()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        verify_manifest(bundle_dir)


def _archive(path: Path, entries: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in entries:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "graph/../../evil.txt", "/tmp/evil.txt",
                                  "a/../../evil.txt"])
def test_path_traversal_refused(tmp_path: Path, name: str) -> None:
    target = tmp_path / "deep" / "target"
    ok = tarfile.TarInfo("manifest.json")
    archive = _archive(tmp_path / "evil.tar.gz", [ok, tarfile.TarInfo(name)])
    with pytest.raises(BundleError, match="unsafe path|outside"):
        unpack(archive, target)
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (target / "manifest.json").exists()  # nothing written before the check


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])
def test_links_and_special_files_refused(tmp_path: Path, kind: bytes) -> None:
    link = tarfile.TarInfo("graph/dataflow.onnx")
    link.type = kind
    link.linkname = "/etc/passwd"
    archive = _archive(tmp_path / "link.tar.gz", [link])
    with pytest.raises(BundleError, match="link|special file"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "graph" / "dataflow.onnx").exists()


def test_symlinked_file_in_stage_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "ln").symlink_to(bundle_dir / "bundle.json")
    with pytest.raises(BundleError, match="symbolic link"):
        write_manifest(bundle_dir)


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"not a tar file at all")
    with pytest.raises(BundleError, match="not a readable tar"):
        unpack(tmp_path / "x.tar.gz", tmp_path / "out")
