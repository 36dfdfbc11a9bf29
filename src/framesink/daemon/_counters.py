"""Daemon counters, the recent rejections shown in the status, and their log lines.

Everything here is bounded whatever a peer sends: rejections are counted per
acquisition for the most recent ``TRACKED_ACQUISITIONS`` ids only, and rejection log
lines are rate-limited per reason (a summary line says how many were left out).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..core import Counter, CounterValues, RefusalError, Rejection, utc_now

log = logging.getLogger("framesink.ingest")

RECENT_ERRORS = 50
TRACKED_ACQUISITIONS = 1024
LOG_WINDOW_S = 10.0
LOG_LINES_PER_WINDOW = 20
NOT_BAD = frozenset({"orphan", "late_message"})
REASON_COUNTERS = {
    "orphan": Counter.ORPHAN_MESSAGES,
    "late_message": Counter.LATE_MESSAGES,
    "duplicate_start": Counter.DUPLICATE_STARTS,
}


@dataclass
class _ReasonLog:
    """Log lines of one rejection reason in the current window."""

    window_start: float = 0.0
    lines: int = 0
    suppressed: int = 0


@dataclass
class Counters:
    """Monotonic counts since start, plus rejections by reason (not thread-safe: the
    daemon calls it under its dispatcher lock)."""

    values: dict[Counter, int] = field(default_factory=lambda: dict.fromkeys(Counter, 0))
    rejections: dict[str, int] = field(default_factory=dict)
    recent_errors: deque[Rejection] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    rejections_by_acquisition: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _logs: dict[str, _ReasonLog] = field(default_factory=dict)

    def add(self, counter: Counter, amount: int = 1) -> None:
        self.values[counter] += amount

    def reject(self, error: RefusalError) -> None:
        """Count and log a rejected message, and keep it for the status."""
        if error.reason in REASON_COUNTERS:
            self.add(REASON_COUNTERS[error.reason])
        if error.reason not in NOT_BAD:
            self.add(Counter.BAD_MESSAGES)
        self.rejections[error.reason] = self.rejections.get(error.reason, 0) + 1
        if error.acquisition:
            self._count_for(error.acquisition)
        self.recent_errors.append(
            Rejection(
                time=utc_now(),
                reason=error.reason,
                detail=error.detail,
                acquisition=error.acquisition,
            )
        )
        self._log(error)

    def _count_for(self, acquisition: str) -> None:
        by_acquisition = self.rejections_by_acquisition
        by_acquisition[acquisition] = by_acquisition.get(acquisition, 0) + 1
        by_acquisition.move_to_end(acquisition)
        while len(by_acquisition) > TRACKED_ACQUISITIONS:
            by_acquisition.popitem(last=False)

    def _log(self, error: RefusalError) -> None:
        level = logging.INFO if error.reason in NOT_BAD else logging.WARNING
        self._log_limited(
            error.reason,
            level,
            "rejected message (%s)%s: %s",
            error.reason,
            f" for {error.acquisition}" if error.acquisition else "",
            error.detail,
        )

    def auth_refused(self, peer: str, what: str) -> None:
        """Count and log (rate-limited) one refused CURVE handshake."""
        self.add(Counter.AUTH_FAILURES)
        self._log_limited(
            "auth_refused", logging.WARNING, "refused a connection from %s: %s", peer, what
        )

    def _log_limited(self, reason: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        state = self._logs.setdefault(reason, _ReasonLog(now))
        if now - state.window_start >= LOG_WINDOW_S:
            self._summarize(reason, state)
            state.window_start, state.lines = now, 0
        if state.lines >= LOG_LINES_PER_WINDOW:
            state.suppressed += 1
            return
        state.lines += 1
        log.log(level, message, *args)

    def flush_suppressed(self, *, final: bool = False) -> None:
        """Log a summary for each reason whose window has ended (every one when
        ``final``) with lines left out."""
        now = time.monotonic()
        for reason, state in self._logs.items():
            if final or now - state.window_start >= LOG_WINDOW_S:
                self._summarize(reason, state)

    @staticmethod
    def _summarize(reason: str, state: _ReasonLog) -> None:
        if state.suppressed:
            log.warning(
                "%d more messages rejected (%s) in the last %.0f s were not logged one by one",
                state.suppressed,
                reason,
                min(LOG_WINDOW_S, time.monotonic() - state.window_start),
            )
            state.suppressed = 0

    def peer_disconnected(self, endpoint: str, max_message_bytes: int, quiet: bool) -> None:
        """Count a disconnect; log it unless its handshake failure was already reported.

        ZeroMQ does not say why a peer went: a publisher closing its socket and one whose
        message was larger than the socket allows look the same, so the size is logged at
        debug level only (docs/operations.md has the symptom).
        """
        self.add(Counter.PEER_DISCONNECTS)
        if quiet:
            return
        log.info("publisher %s disconnected", endpoint)
        log.debug(
            "(a publisher still sending is disconnected by ZeroMQ if a message is larger "
            "than %d bytes: max_message_bytes, or max_header_bytes on the ring socket)",
            max_message_bytes,
        )

    def snapshot(self) -> CounterValues:
        values = {counter.value: value for counter, value in self.values.items()}
        return CounterValues.model_validate({**values, "rejected_by_reason": dict(self.rejections)})
