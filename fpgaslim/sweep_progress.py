"""The sweep's progress display: one bar for the whole sweep, one for the current stage.
Disabled (progress=False) or not a terminal (None): nothing is drawn."""

from __future__ import annotations

import sys
from typing import Any

STAGES = 4  # baseline, methods (counted per step), builds, report


class SweepProgress:
    def __init__(self, enabled: bool | None = None, total_stages: int = STAGES) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._total = total_stages
        self._main = self._sub = None

    def __enter__(self) -> "SweepProgress":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
            self._progress.start()
            self._main = self._progress.add_task("sweep", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def stage(self, name: str, total: int | None = None) -> None:
        if self._progress is None:
            return
        self._progress.update(self._main, description=f"sweep: {name}")
        if self._sub is not None:
            self._progress.remove_task(self._sub)
            self._sub = None
        if total:
            self._sub = self._progress.add_task(f"  {name}", total=total)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._main)

    def advance_sub(self) -> None:
        if self._progress is not None and self._sub is not None:
            self._progress.advance(self._sub)
