"""The comparison layer: variants x boards from saved records only (no rebuilding).

  rows.py     the records: columns, one row per variant x board, the result, the Pareto front
  table.py    collecting rows from runs' records and hardware reports; `compare_runs`
  writers.py  CSV, Markdown, a rich table and the single-file HTML report
  plots.py    the figures (matplotlib)
  resconv.py  ResConv-Prune's residual-vs-fused side by side on FINN's estimates

It sits above compress/ and hw/ (it reads their records) and below the front (CLI, sweep)."""

from .rows import BOARD_ORDER, COLUMNS, Column, ComparisonData, ComparisonRow, Skipped, pareto_front
from .table import ComparisonResult, collect, compare_runs, make_row, run_missing_maxfits

__all__ = ["run_missing_maxfits", "BOARD_ORDER", "COLUMNS", "Column", "ComparisonData", "ComparisonResult", "ComparisonRow", "Skipped",
           "collect", "compare_runs", "make_row", "pareto_front"]
