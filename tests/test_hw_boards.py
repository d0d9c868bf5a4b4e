from __future__ import annotations

import pytest

from fpgaslim.core.errors import UnknownNameError
from fpgaslim.hw.boards import RESOURCES, get_board, list_boards


def test_catalogue_has_the_required_boards_with_sources():
    for name in ("pynq-z1", "pynq-z2", "aup-zu3", "kv260", "zcu104", "zcu102", "u50", "u55c",
                 "u200", "u250", "u280"):
        b = get_board(name)
        for r in RESOURCES:
            assert b.capacity(r) >= 0 and b.source_of(r)
        assert b.offchip_gbps > 0 and b.source_of("offchip_gbps")
        assert b.shell_flow == ("vitis_alveo" if name.startswith("u") else "vivado_zynq")


def test_known_datasheet_figures():
    z1 = get_board("pynq-z1")
    assert (z1.LUT, z1.FF, z1.BRAM_18K, z1.URAM, z1.DSP) == (53200, 106400, 280, 0, 220)
    assert z1.part == "xc7z020clg400-1"


def test_newer_boards_datasheet_figures():
    """AMD DS891 (ZU3EG, ZU9EG), DS978 (U55C), DS962 (U200): boards.toml's figures."""
    def figures(name):
        b = get_board(name)
        return (b.LUT, b.FF, b.BRAM_18K, b.URAM, b.DSP)

    assert figures("aup-zu3") == (70560, 141120, 432, 0, 360)
    assert figures("zcu102") == (274080, 548160, 1824, 0, 2520)
    assert figures("u55c") == (1304000, 2607000, 4032, 960, 9024)
    assert figures("u200") == (1182000, 2364000, 4320, 960, 6840)
    assert get_board("AUP-ZU3_8GB").name == "aup-zu3"  # FINN's name
    assert get_board("aup-zu3").offchip_gbps == 9.6  # 32 bit x 2400 MT/s


def test_parts_agree_with_finn_part_map():
    from finn.util.basic import part_map

    for name in list_boards():
        b = get_board(name)
        assert part_map[b.finn_board] == b.part, name


def test_finn_knows_every_board_s_flow():
    """finn-plus builds a Zynq board from pynq_part_map (and its AXI port width) and an Alveo
    card from alveo_part_map and its default Vitis platform: every board has them."""
    from finn.util.basic import (alveo_default_platform, alveo_part_map, pynq_native_port_width,
                                 pynq_part_map)

    for name in list_boards():
        b = get_board(name)
        if b.is_zynq:
            assert b.finn_board in pynq_part_map and b.finn_board in pynq_native_port_width, name
        else:
            assert b.finn_board in alveo_part_map and b.finn_board in alveo_default_platform, name


def test_names_are_forgiving_and_unknown_lists_valid():
    assert get_board("Pynq_Z1").name == "pynq-z1"
    assert get_board("KV260_SOM").name == "kv260"
    assert get_board("Alveo U250").name == "u250"
    with pytest.raises(UnknownNameError, match="pynq-z1"):
        get_board("zedboard")
