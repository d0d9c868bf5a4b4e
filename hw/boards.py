"""The board catalogue: FPGA capacities and off-chip bandwidth as data (boards.toml, package
data), each figure with the datasheet it comes from, so a report can say "% of the board"."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from fpgaslim.core.errors import ConfigError, UnknownNameError

RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
#: the board a build, a verification, a max-fit or a bundle is for when none is named
DEFAULT_BOARD = "pynq-z1"
ZYNQ, ALVEO = "vivado_zynq", "vitis_alveo"  # FINN's two shell flows


class BoardSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fabric: str  # the datasheet of LUT/FF/BRAM_18K/URAM/DSP
    offchip: str  # the datasheet of the off-chip memory figure


class Board(BaseModel):
    """One board: its part, how FINN targets it, and its capacities."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str  # catalogue key, e.g. "pynq-z1"
    display: str
    finn_board: str  # FINN's board name (part_map key)
    part: str
    shell_flow: Literal["vivado_zynq", "vitis_alveo"]  # ZYNQ or ALVEO
    LUT: int = Field(gt=0)
    FF: int = Field(gt=0)
    BRAM_18K: int = Field(ge=0)
    URAM: int = Field(ge=0)
    DSP: int = Field(ge=0)
    offchip_gbps: float = Field(gt=0)
    offchip_memory: str
    source: BoardSource

    def capacity(self, resource: str) -> int:
        return int(getattr(self, resource))

    def source_of(self, figure: str) -> str:
        """The datasheet of a figure: a resource name or "offchip_gbps"."""
        return self.source.offchip if figure.startswith("offchip") else self.source.fabric

    @property
    def is_zynq(self) -> bool:
        """A Zynq SoC board (FINN's vivado_zynq shell: a bitfile, PYNQ's zynq-iodma driver);
        otherwise an Alveo card (vitis_alveo: an xclbin, XRT)."""
        return self.shell_flow == ZYNQ

    @property
    def default_target_fps(self) -> int:
        """A sensible folding target: 10,000 fps on Zynq, 100,000 on Alveo cards."""
        return 10_000 if self.is_zynq else 100_000


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-").removeprefix("alveo-")


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, Board]:
    text = resources.files("fpgaslim.hw").joinpath("boards.toml").read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
        return {k: Board(name=k, **v) for k, v in raw.items()}
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"hw/boards.toml is invalid: {exc}") from exc


def list_boards() -> list[str]:
    return sorted(_catalogue())


def board_order() -> tuple[str, ...]:
    """The catalogue's names in boards.toml's order (small Zynq boards first, Alveo cards
    last): the order of a comparison's rows."""
    return tuple(_catalogue())


def get_board(name: str) -> Board:
    """Look a board up by catalogue name or FINN name, ignoring case, '_' vs '-' and an
    "Alveo " prefix ("Pynq_Z1", "pynq-z1", "KV260_SOM", "Alveo U250" all work)."""
    cat = _catalogue()
    key = _key(name)
    if key in cat:
        return cat[key]
    for board in cat.values():
        if key in (_key(board.finn_board), _key(board.display)):
            return board
    raise UnknownNameError("board", name, list(cat))


def as_board(board: "str | Board") -> Board:
    """A Board as it is, a name looked up once (the public entry points take either; the
    layers below them take the Board)."""
    return board if isinstance(board, Board) else get_board(board)


def _look_up(value: Any) -> Any:
    if isinstance(value, Board):
        return value
    if isinstance(value, str):
        return get_board(value)  # an unknown name: UnknownNameError, listing the boards
    return value  # a mapping of a Board's fields, or an invalid value: pydantic says which


#: a settings field that holds a Board: given a name (or a Board), looked up once when the
#: settings are made, written back as the catalogue name (so saved settings stay names)
BoardField = Annotated[Board, BeforeValidator(_look_up),
                       PlainSerializer(lambda b: b.name, return_type=str)]


def default_board() -> Board:
    return get_board(DEFAULT_BOARD)
