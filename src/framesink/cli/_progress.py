"""A small progress bar for terminals (plain periodic lines when not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Shows ``done/total`` with a rate; redraws at most ten times a second."""

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, unit: str = "frames"
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._interactive = self.stream.isatty()

    def update(self, amount: int = 1) -> None:
        self.done += amount
        now = time.monotonic()
        interval = 0.1 if self._interactive else 5.0
        if now - self._last_draw >= interval or self.done >= self.total:
            self._draw(now)
            self._last_draw = now

    def _draw(self, now: float) -> None:
        fraction = min(1.0, self.done / self.total)
        rate = self.done / max(1e-9, now - self._start)
        bar = "#" * int(fraction * 30)
        line = f"{self.label} [{bar:<30}] {self.done}/{self.total} {self.unit} ({rate:,.0f}/s)"
        if self._interactive:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.done < self.total:
            self._draw(time.monotonic())
        if self._interactive:
            self.stream.write("\n")
        self.stream.flush()
