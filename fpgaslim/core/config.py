"""YAML/TOML config loading with validation errors that name the field."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fpgaslim.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (misspelt?)"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source or model.__name__)) from exc


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                          f"{exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


_BITS = re.compile(r"^w(\d)a(\d)$")


def parse_bits(tag: str) -> dict[str, int]:
    """'w4a4' -> {'weight': 4, 'act': 4}."""
    m = _BITS.match(tag.strip().lower())
    if not m:
        raise ConfigError(f"bit widths {tag!r}: write them as wNaM (N, M in 1..8), e.g. "
                          "w4a4, w2a2, w1a1")
    return {"weight": int(m.group(1)), "act": int(m.group(2))}
