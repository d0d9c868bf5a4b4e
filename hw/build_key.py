"""One build key, and the build records that decide "is this build done?".

The key is a hash of everything that changes a build's result: the variant's model content
(the checkpoint's sha256; for an imported QONNX file, the file's and its verification
inputs' sha256), the data its verification images come from and their count, the board, the
BuildSettings fields that reach FINN (clock, target_fps, weight placement, mvau_wwidth_max,
prefer_rtl, FINN's own verification steps), the kind of build with its own settings (a
max-fit's budget and grid; an optimal folding's `styles`, whether it picks HLS or RTL per
layer, which changes the graph FINN builds), the finn-plus version and fpgaslim's
build-pipeline versions.
Settings that leave the result as it is are listed once, in UNKEYED; `keyed_settings` is
the one answer to "which settings key a build" (the key, the folder name, a record's match).

Every finished build writes a record, `build.json`, beside its result (report.json or
maxfit.json), atomically and after the result: the record is the commit point. A build is
done when its folder holds a record whose key equals the key computed now and the result
file it names. Records are per folder, so builds that run at the same time in a process
pool never write the same file; `find_builds` is the index, read from the records.
Folder names (`build_dir_for`, the max-fit paths) are for people: nothing reads meaning back
from them.

Which build of (variant, board) a command means is `find_build`'s one rule (verify, compare,
the deployment bundle and the optimal folding's start graph all ask it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fpgaslim.core.atomic import atomic_write_text
from fpgaslim.core.errors import ConfigError, FpgaslimError

from .boards import Board

if TYPE_CHECKING:
    from .build import BuildSettings

#: bump when fpgaslim's build pipeline changes what a finished build contains
BUILD_VERSION = "fpgaslim-build/1"
RECORD_FILE = "build.json"
#: BuildSettings fields that do not change a build's result, so not in its key: time limits;
#: strict (a mismatch either raises or is recorded, a passing build is the same); streamline
#: (fast and stock give the same graph byte for byte); the second opinion (synth, sim,
#: layer_timeout_s: Yosys / Verilator figures attached to a finished build, cached per layer)
UNKEYED = frozenset({"timeout_s", "strict", "streamline", "synth", "sim", "layer_timeout_s"})
Kind = Literal["estimate", "maxfit-optimal", "maxfit-search"]
RESULT_FILE = {"estimate": "report.json", "maxfit-optimal": "maxfit.json",
               "maxfit-search": "maxfit.json"}


class BuildRecord(BaseModel):
    """What a finished build was made from; `key` decides whether it is still current."""

    model_config = ConfigDict(extra="forbid")
    key: str
    kind: Kind
    variant: str
    board: str
    result: str  # file name of the result in the same folder
    default: bool  # an estimate build with the board's default settings
    settings: dict[str, Any]  # the keyed build settings (plus a max-fit's own settings)
    inputs: dict[str, Any]  # the other keyed inputs: model, data, images, versions
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


# --------------------------------------------------------------------------- the key's inputs
@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def model_identity(run: Any, variant_id: str) -> dict[str, Any]:
    """The variant's model content and the data of its verification images, without where
    they are on disk. The checkpoint rather than its QONNX export: it exists before the
    export, never changes after training, and the export is a function of it and of the
    exporter (covered by BUILD_VERSION)."""
    from fpgaslim.compress.data import recorded_origin

    rec = run.record(variant_id)
    if rec.is_imported:  # an imported file (hw/api.import_onnx)
        data = rec.details.get("data") or {}
        # pixels in / class indices out change the graph that is built (only when given, so
        # the keys of earlier imports stay as they were)
        prep = {k: rec.settings[k] for k in ("input", "topk") if rec.settings.get(k) is not None}
        return {"model": {"file_sha256": rec.arch.file_sha256, **prep},
                "data": {"inputs_sha256": data.get("sha256"),
                         "label": rec.details.get("verify_data")}}
    origin = recorded_origin(run, variant_id)
    data = {k: v for k, v in origin.items() if k not in ("path", "label")}
    return {"model": {"checkpoint_sha256": file_sha256(run.variant_dir(variant_id)
                                                       / rec.checkpoint)},
            "data": {"dataset": rec.dataset, **data}}


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    from .build import PREFIX_VERSION
    from .finn_compat import finn_version

    try:
        finn = finn_version()
    except FpgaslimError:  # no finn-plus: no build either, but planning still works
        finn = "missing"
    return {"finn-plus": finn, "fpgaslim": BUILD_VERSION, "prefix": PREFIX_VERSION}


def keyed_fields() -> frozenset[str]:
    """The BuildSettings fields that change a build's result (the board among them)."""
    from .build import BuildSettings

    return frozenset(BuildSettings.model_fields) - UNKEYED


def keyed_settings(settings: "BuildSettings") -> dict[str, Any]:
    """The settings that change a build's result (board name included), with the board's
    defaults filled in: what the key hashes, the record keeps and the folder name digests."""
    return settings.resolved().model_dump(mode="json", include=set(keyed_fields()))


def is_default(settings: "BuildSettings") -> bool:
    """Whether these are their board's default settings (as far as they change a result)."""
    from .build import BuildSettings

    return keyed_settings(settings) == keyed_settings(BuildSettings(board=settings.board))


def build_dir_for(run: Any, variant_id: str, settings: "BuildSettings") -> Path:
    """builds/<board> for the default settings of that board, else builds/<board>-<hash> of
    the keyed settings: a name for people; whether the build in it is done is its record's."""
    from .build import BuildSettings

    def named(s: "BuildSettings") -> dict[str, Any]:
        keyed = keyed_settings(s)
        if not settings.prefer_rtl:  # prefer_rtl off leaves existing builds' names as they were
            keyed.pop("prefer_rtl")
        return keyed

    keyed, name = named(settings), settings.board.name
    if keyed != named(BuildSettings(board=settings.board)):
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{name}-{digest}"
    return run.variant_dir(variant_id) / "builds" / name


def _digest(blob: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


class BuildKey(BaseModel):
    """A computed key and what went into it (kept in the record, for a reader)."""

    model_config = ConfigDict(extra="forbid")
    key: str
    kind: Kind
    variant: str
    board: str
    default: bool
    settings: dict[str, Any]
    inputs: dict[str, Any]


def build_key(identity: dict[str, Any], settings: "BuildSettings", kind: Kind,
              variant: str, verify_images: int | str, extra: dict[str, Any] | None = None,
              version: dict[str, str] | None = None) -> BuildKey:
    """The key of one build from its inputs (no disk access: `identity` is model_identity's,
    `version` defaults to versions()), for settings.board. `extra`: a max-fit's own settings
    (budget, grid)."""
    keyed = keyed_settings(settings)
    if extra:
        keyed = {**keyed, kind: extra}
    inputs = {**identity, "verify_images": verify_images, "versions": version or versions()}
    board = settings.board.name
    key = _digest({"kind": kind, "board": board, "settings": keyed, "inputs": inputs})
    return BuildKey(key=key, kind=kind, variant=variant, board=board, settings=keyed,
                    inputs=inputs, default=kind == "estimate" and is_default(settings))


def variant_key(run: Any, variant_id: str, settings: "BuildSettings", kind: Kind = "estimate",
                verify_images: int | str = 0, extra: dict[str, Any] | None = None) -> BuildKey:
    """The key of building `variant_id` of `run` for settings.board now."""
    return build_key(model_identity(run, variant_id), settings, kind, variant_id,
                     verify_images, extra)


# --------------------------------------------------------------------------- records
def read_record(folder: Path) -> BuildRecord | None:
    """The record in `folder`, None when there is none or it is unreadable (not done)."""
    path = Path(folder) / RECORD_FILE
    try:
        return BuildRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def is_done(folder: Path, key: BuildKey) -> bool:
    """A record with this key and the result file it names."""
    rec = read_record(folder)
    return rec is not None and rec.key == key.key and (Path(folder) / rec.result).is_file()


def is_current_build(folder: Path, run: Any, variant_id: str, settings: "BuildSettings"
                     ) -> bool:
    """An estimate build in `folder` of this variant's model and data with these settings by
    these versions, verified on any number of images (its folded graph is the same): a
    start graph that can be reused (the optimal folding's), a build that can be deployed."""
    rec = read_record(folder)
    if rec is None or rec.kind != "estimate" or not (Path(folder) / rec.result).is_file():
        return False
    return (rec.board == settings.board.name and rec.settings == keyed_settings(settings)
            and is_current_record(rec, run, variant_id))


def is_current_record(rec: BuildRecord, run: Any, variant_id: str) -> bool:
    """A record of this variant's model and data now, by these versions (its settings
    aside): a legacy one (no key) never is."""
    ident = model_identity(run, variant_id)
    return (bool(rec.key) and all(rec.inputs.get(k) == v for k, v in ident.items())
            and rec.inputs.get("versions") == versions())


def write_record(folder: Path, key: BuildKey) -> Path:
    """Commit a finished build: its record, after its result (atomic)."""
    rec = BuildRecord(result=RESULT_FILE[key.kind], **key.model_dump())
    return atomic_write_text(Path(folder) / RECORD_FILE, rec.model_dump_json(indent=2))


def _legacy_record(folder: Path, variant_id: str) -> BuildRecord | None:
    """A finished result written before build records existed (or copied without its
    record): what it was built for, read from the result file itself (its `board` and
    `settings`). Its key is empty, so it is never "done" for a new build; an unreadable
    result gets board "" and is left to the caller's reader to report."""
    from .build import BuildSettings

    for kind, result in (("estimate", "report.json"), ("maxfit", "maxfit.json")):
        path = folder / result
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data = data if isinstance(data, dict) else {}
        board = str(data.get("board") or "")
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        default = False
        if kind == "maxfit":
            kind = "maxfit-optimal" if data.get("method") == "optimal" else "maxfit-search"
        elif board:
            try:
                fields = {k: v for k, v in settings.items() if k in BuildSettings.model_fields}
                default = is_default(BuildSettings(**{**fields, "board": board}))
            except (ValidationError, ValueError, ConfigError):
                pass
        return BuildRecord(key="", kind=kind, variant=variant_id, board=board, result=result,
                           default=default, settings=settings, inputs={})
    return None


def find_builds(run: Any, variant_id: str, kind: Kind | tuple[Kind, ...] | None = None,
                board: Board | str | None = None) -> list[tuple[Path, BuildRecord]]:
    """The index of a variant's finished builds (folder, record), oldest result first, read
    from their records; a folder with a result but no record is described from its result
    file. `kind` / `board` (a Board or the catalogue name records hold): only those."""
    root = run.variant_dir(variant_id) / "builds"
    kinds = (kind,) if isinstance(kind, str) else kind
    name = board.name if isinstance(board, Board) else board
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        rec = read_record(folder)
        if rec is None or not (folder / rec.result).is_file():
            rec = _legacy_record(folder, variant_id)
        if rec is None or (kinds and rec.kind not in kinds) or (name and rec.board != name):
            continue
        found.append((folder, rec))
    return sorted(found, key=lambda fr: (fr[0] / fr[1].result).stat().st_mtime)


def choose_build(builds: list[tuple[Path, BuildRecord]], settings: "BuildSettings | None" = None
                 ) -> tuple[Path, BuildRecord] | None:
    """The one rule for which of a board's estimate builds (find_builds' order: oldest first)
    a command means: with `settings`, the newest built with exactly these keyed settings;
    without, the newest default-settings build, else the newest of all. None: none."""
    if settings is not None:
        keyed = keyed_settings(settings)
        builds = [(f, r) for f, r in builds if _keyed_of(r) == keyed]
    else:
        builds = [fr for fr in builds if fr[1].default] or builds
    return builds[-1] if builds else None


def _keyed_of(rec: BuildRecord) -> dict[str, Any] | None:
    """A record's keyed settings; a legacy one's (its report's settings) keyed as now."""
    if rec.key:
        return rec.settings
    from .build import BuildSettings

    fields = {k: v for k, v in rec.settings.items() if k in BuildSettings.model_fields}
    try:
        return keyed_settings(BuildSettings(**{**fields, "board": rec.board}))
    except (ValidationError, ValueError, ConfigError):
        return None


def find_build(run: Any, variant_id: str, board: Board | str,
               settings: "BuildSettings | None" = None) -> tuple[Path, BuildRecord] | None:
    """The finished estimate build of (variant, board) a command means (choose_build's rule),
    from the records; None when there is none."""
    return choose_build(find_builds(run, variant_id, "estimate", board), settings)
