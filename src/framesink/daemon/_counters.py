"""Daemon counters and the log of recent rejections shown in the status."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from ..core import Counter, CounterValues, Rejection, WireError, utc_now

log = logging.getLogger("framesink.ingest")

RECENT_ERRORS = 50
NOT_BAD = frozenset({"orphan", "late_message"})
REASON_COUNTERS = {
    "orphan": Counter.ORPHAN_MESSAGES,
    "late_message": Counter.LATE_MESSAGES,
    "duplicate_start": Counter.DUPLICATE_STARTS,
}


@dataclass
class Counters:
    """Monotonic counts since start, plus rejections by reason."""

    values: dict[Counter, int] = field(default_factory=lambda: dict.fromkeys(Counter, 0))
    rejections: dict[str, int] = field(default_factory=dict)
    recent_errors: deque[Rejection] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    rejections_by_acquisition: dict[str, int] = field(default_factory=dict)

    def add(self, counter: Counter, amount: int = 1) -> None:
        self.values[counter] += amount

    def reject(self, error: WireError) -> None:
        """Count and log a rejected message, and keep it for the status."""
        if error.reason in REASON_COUNTERS:
            self.add(REASON_COUNTERS[error.reason])
        if error.reason not in NOT_BAD:
            self.add(Counter.BAD_MESSAGES)
        self.rejections[error.reason] = self.rejections.get(error.reason, 0) + 1
        if error.acquisition:
            by_acquisition = self.rejections_by_acquisition
            by_acquisition[error.acquisition] = by_acquisition.get(error.acquisition, 0) + 1
        self.recent_errors.append(
            Rejection(
                time=utc_now(),
                reason=error.reason,
                detail=error.detail,
                acquisition=error.acquisition,
            )
        )
        level = logging.INFO if error.reason in NOT_BAD else logging.WARNING
        log.log(
            level,
            "rejected message (%s)%s: %s",
            error.reason,
            f" for {error.acquisition}" if error.acquisition else "",
            error.detail,
        )

    def snapshot(self) -> CounterValues:
        values = {counter.value: value for counter, value in self.values.items()}
        return CounterValues.model_validate({**values, "rejected_by_reason": dict(self.rejections)})
