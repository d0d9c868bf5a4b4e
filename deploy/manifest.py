"""Bundle manifests and safe unpacking: stdlib only, because the board runs this too.

A bundle is one tar.gz whose `manifest.json` lists every other file with its sha256 and size.
Unpacking refuses anything a hostile or damaged archive could use to write outside the target
folder (absolute paths, `..`, links, devices), then checks every file against the manifest and
refuses files the manifest does not list. Both sides import this module, so the check that the
compiler wrote is the check the board runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from fpgaslim.core.errors import BundleError

MANIFEST = "manifest.json"
FORMAT = "fpgaslim-bundle/1"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink():
                raise BundleError(f"{p} is a symbolic link; bundles hold regular files only")
            rel = p.relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return out


def write_manifest(root: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file under `root` into root/manifest.json (written last) and return it."""
    root = Path(root)
    files = {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
             for rel in _files(root)}
    manifest = {"format": FORMAT, **(meta or {}), "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{path} is missing: not an fpgaslim bundle") from exc
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path}: unknown bundle format {manifest.get('format')!r} "
                          f"(this runner reads {FORMAT})")
    return manifest


def verify_manifest(root: str | Path) -> dict[str, Any]:
    """Check every listed file's size and sha256, and that no unlisted file is present."""
    root = Path(root)
    manifest = read_manifest(root)
    for rel, entry in manifest["files"].items():
        _check_name(rel)
        path = root / rel
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"bundle file {rel} is missing")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(f"bundle file {rel} does not match its manifest checksum "
                              "(damaged or modified after bundling)")
    extra = sorted(set(_files(root)) - set(manifest["files"]))
    if extra:
        raise BundleError(f"bundle holds files its manifest does not list: {', '.join(extra)}")
    return manifest


def _check_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if (not name or p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts
            or "\\" in name or ":" in p.parts[0]):
        raise BundleError(f"unsafe path {name!r} in bundle (absolute or leaving the target "
                          "folder); refusing to unpack")
    return p


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract regular files and folders only, each checked to land inside `target`.

    Files are written by this code (not tarfile.extract), so no mode bits, owners or links
    from the archive are ever applied.
    """
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{archive} is not a readable tar archive ({exc})") from exc
    with tar:
        members = tar.getmembers()
        for m in members:  # check everything before writing anything
            _check_name(m.name)
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "special file"
                raise BundleError(f"bundle entry {m.name!r} is a {kind}; refusing to unpack")
            dest = (target / m.name).resolve()
            if dest != target and target not in dest.parents:
                raise BundleError(f"bundle entry {m.name!r} would be written outside "
                                  f"{target}; refusing to unpack")
        for m in members:
            dest = target / m.name
            if m.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            if src is None:
                raise BundleError(f"bundle entry {m.name!r} cannot be read")
            with src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    return target


def unpack(archive: str | Path, target: str | Path) -> dict[str, Any]:
    """Safely extract `archive` into `target` and verify it; returns the manifest."""
    root = safe_extract(archive, target)
    return verify_manifest(root)


def pack(root: str | Path, archive: str | Path) -> Path:
    """tar.gz the folder `root` (manifest included) with plain, owner-free entries."""
    root, archive = Path(root), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0  # same content -> same archive bytes
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    tmp = archive.with_name(archive.name + ".part")
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for rel in [MANIFEST, *_files(root)]:
            tar.add(root / rel, arcname=rel, filter=clean, recursive=False)
    os.replace(tmp, archive)
    return archive
