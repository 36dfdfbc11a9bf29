"""Admission of frames into the queue: the byte budget, and who waits for it.

PULL waits for queue space (backpressure: ZeroMQ then holds the publisher back); SUB
never waits (what does not fit is recorded missing). At shutdown nothing waits beyond
the intake deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from ..core import ByteBudget

BUDGET_WAIT_S = 0.5


class Admitted(NamedTuple):
    granted: bool
    waited: float
    """Seconds spent waiting (messages waited in ZeroMQ meanwhile: not idleness)."""


class Admission:
    """The budget of queued bytes and the waiting policy of the daemon's socket kind."""

    def __init__(self, limit: int, waits: bool) -> None:
        self.budget = ByteBudget(limit)
        self.waits = waits
        self.intake_deadline: float | None = None
        """Set at shutdown: no message waits for queue space beyond it."""

    def close_intake(self, within: float) -> float:
        """From now on nothing waits for queue space beyond ``within`` seconds (the first
        call decides); return that deadline."""
        if self.intake_deadline is None:
            self.intake_deadline = time.monotonic() + within
        return self.intake_deadline

    def admit(self, nbytes: int, held: threading.Lock, ended: Callable[[], bool]) -> Admitted:
        """Reserve ``nbytes`` of queue space.

        Waiting happens with ``held`` (the caller's lock) released, so that writers can
        free space and the status can be read meanwhile; it stops when ``ended()`` (the
        acquisition is over) or at the intake deadline.
        """
        if self.budget.acquire(nbytes, timeout=0):
            return Admitted(True, 0.0)
        if not self.waits:
            return Admitted(False, 0.0)
        started = time.monotonic()
        held.release()
        try:
            while True:
                deadline = self.intake_deadline
                wait = BUDGET_WAIT_S
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if self.budget.acquire(nbytes, timeout=wait):
                    return Admitted(True, time.monotonic() - started)
                if ended() or (deadline is not None and time.monotonic() >= deadline):
                    return Admitted(False, time.monotonic() - started)
        finally:
            held.acquire()
