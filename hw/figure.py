"""A number that never travels without its unit and its provenance."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Figure(BaseModel):
    """A number with its unit, provenance and, where it applies, the board's capacity."""

    model_config = ConfigDict(extra="forbid")
    value: float
    unit: str
    source: str
    capacity: float | None = None
    percent: float | None = None  # of capacity

    @classmethod
    def of(cls, value: float, unit: str, source: str, capacity: float | None = None,
           cap_source: str | None = None) -> "Figure":
        # a board without the resource (URAM on a Zynq-7000): 0 % if unused, else no
        # percentage (the report's overflow entry says by how much it is over)
        pct = 100.0 * value / capacity if capacity else (
            0.0 if capacity == 0 and value == 0 else None)
        src = source if cap_source is None else f"{source}; capacity: {cap_source}"
        return cls(value=value, unit=unit, source=src, capacity=capacity, percent=pct)
