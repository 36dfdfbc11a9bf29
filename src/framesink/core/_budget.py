"""A bound on the pixel bytes waiting for the disk, shared by every writer."""

from __future__ import annotations

import threading


class ByteBudget:
    """Counts queued bytes; ``acquire`` waits (with a timeout) while over the limit.

    A single request larger than the whole limit is let through when nothing else is
    queued, so an oversize chunk cannot wedge the daemon.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = threading.Condition()

    def acquire(self, nbytes: int, timeout: float) -> bool:
        with self._changed:
            granted = self._fits(nbytes) or self._changed.wait_for(
                lambda: self._fits(nbytes), timeout=timeout
            )
            if granted:
                self.used += nbytes
            return granted

    def release(self, nbytes: int) -> None:
        with self._changed:
            self.used -= nbytes
            self._changed.notify_all()

    def _fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.limit or self.used == 0
