from __future__ import annotations

import pytest

from fpgaslim.core.errors import UnknownNameError
from fpgaslim.hw.boards import RESOURCES, get_board, list_boards


def test_catalogue_has_the_required_boards_with_sources():
    for name in ("pynq-z1", "pynq-z2", "zcu104", "kv260", "u50", "u250", "u280"):
        b = get_board(name)
        for r in RESOURCES:
            assert b.capacity(r) >= 0 and b.source_of(r)
        assert b.offchip_gbps > 0 and b.source_of("offchip_gbps")
        assert b.shell_flow == ("vitis_alveo" if name.startswith("u") else "vivado_zynq")


def test_known_datasheet_figures():
    z1 = get_board("pynq-z1")
    assert (z1.LUT, z1.FF, z1.BRAM_18K, z1.URAM, z1.DSP) == (53200, 106400, 280, 0, 220)
    assert z1.part == "xc7z020clg400-1"


def test_parts_agree_with_finn_part_map():
    from finn.util.basic import part_map

    for name in list_boards():
        b = get_board(name)
        assert part_map[b.finn_board] == b.part, name


def test_names_are_forgiving_and_unknown_lists_valid():
    assert get_board("Pynq_Z1").name == "pynq-z1"
    assert get_board("KV260_SOM").name == "kv260"
    assert get_board("Alveo U250").name == "u250"
    with pytest.raises(UnknownNameError, match="pynq-z1"):
        get_board("zedboard")
