"""Off-chip transfer per frame, which FINN does not report.

* input / output bytes: the dataflow partition's first input and last output stream (shape x
  datatype bits), i.e. what the DMA moves per frame;
* weight bytes of layers with mem_mode=external: FINN re-streams the weights for every output
  pixel, so a layer moves (weight-stream width x its expected cycles) bits per frame, not its
  weight size once (FINN_NOTES: 216 B of weights moved 216 KiB per frame);
* the bandwidth that needs at the estimated fps, against the board's off-chip bandwidth.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from .boards import Board
from .figure import Figure

SOURCE = ("fpgaslim, from FINN's folded layer config: stream shape x datatype bits; "
          "external weights = weight-stream width x expected cycles per frame")


class OffChipTraffic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_bytes: Figure
    output_bytes: Figure
    weight_bytes: Figure
    total_bytes: Figure
    weight_bytes_by_layer: dict[str, float]
    bandwidth_needed: Figure  # GB/s at the estimated fps, % of the board's bandwidth
    input_shape: list[int]
    input_dtype: str
    output_shape: list[int]
    output_dtype: str


def stream_bytes(shape: list[int], bits: int) -> float:
    """Bytes of one frame of a stream: elements x bits / 8 (packed; the DMA moves whole
    bytes per element group, FINN pads each stream word to a multiple of 8 bits)."""
    return math.prod(shape[1:] if len(shape) > 1 else shape) * bits / 8


def offchip_traffic(table: dict[str, Any], fps: float, board: Board) -> OffChipTraffic:
    io = table["io"]
    in_b = stream_bytes(io["input_shape"], io["input_bits"])
    out_b = stream_bytes(io["output_shape"], io["output_bits"])
    by_layer = {row["name"]: row["weightstream_width"] * row["exp_cycles"] / 8
                for row in table["layers"] if row.get("mem_mode") == "external"}
    w_b = float(sum(by_layer.values()))
    total = in_b + out_b + w_b
    gbps = total * fps / 1e9
    return OffChipTraffic(
        input_bytes=Figure.of(in_b, "B", SOURCE), output_bytes=Figure.of(out_b, "B", SOURCE),
        weight_bytes=Figure.of(w_b, "B", SOURCE), total_bytes=Figure.of(total, "B", SOURCE),
        weight_bytes_by_layer=by_layer,
        bandwidth_needed=Figure.of(gbps, "GB/s", f"{SOURCE}; x FINN-estimated fps",
                                   board.offchip_gbps, board.source.offchip),
        input_shape=list(io["input_shape"]), input_dtype=io["input_dtype"],
        output_shape=list(io["output_shape"]), output_dtype=io["output_dtype"])

