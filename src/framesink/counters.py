"""Daemon counters and the log of recent rejections shown in the status."""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .record import utc_now
from .wire import WireError

log = logging.getLogger("framesink.ingest")

COUNTER_NAMES = (
    "messages",
    "bad_messages",
    "orphan_messages",
    "late_messages",
    "duplicate_starts",
    "seq_gaps",
    "peer_disconnects",
    "frames_received",
    "frames_written",
    "frames_dropped",
    "frames_lost_overload",
    "bytes_written",
    "acquisitions_started",
    "acquisitions_finished",
    "acquisitions_failed",
    "acquisitions_rejected",
)
RECENT_ERRORS = 50
NOT_BAD = frozenset({"orphan", "late_message"})
REASON_COUNTERS = {
    "orphan": "orphan_messages",
    "late_message": "late_messages",
    "duplicate_start": "duplicate_starts",
}


@dataclass
class Counters:
    """Monotonic counts since start, plus rejections by reason."""

    values: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    recent_errors: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_ERRORS)
    )
    rejections_by_acquisition: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def reject(self, error: WireError) -> None:
        """Count and log a rejected message, and keep it for the status."""
        if error.reason in REASON_COUNTERS:
            self.add(REASON_COUNTERS[error.reason])
        if error.reason not in NOT_BAD:
            self.add("bad_messages")
        self.rejections[error.reason] += 1
        if error.acquisition:
            self.rejections_by_acquisition[error.acquisition] += 1
        self.recent_errors.append(
            {
                "time": utc_now(),
                "reason": error.reason,
                "detail": error.detail,
                "acquisition": error.acquisition,
            }
        )
        level = logging.INFO if error.reason in NOT_BAD else logging.WARNING
        log.log(
            level,
            "rejected message (%s)%s: %s",
            error.reason,
            f" for {error.acquisition}" if error.acquisition else "",
            error.detail,
        )

    def snapshot(self) -> dict[str, Any]:
        counts: dict[str, Any] = {name: self.values[name] for name in COUNTER_NAMES}
        counts["rejected_by_reason"] = dict(self.rejections)
        return counts
