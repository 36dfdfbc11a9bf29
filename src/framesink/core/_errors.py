"""The base of framesink's own errors, and the refusal that carries a reason code (pure).

Every error framesink raises on purpose derives from :class:`FramesinkError` (and also
from the built-in error it has always been, so ``except ValueError`` keeps working).
A :class:`RefusalError` is something the daemon turns away (a message, a start, a slot):
its ``reason`` is the short, stable code counted and shown in the status.
"""

from __future__ import annotations


class FramesinkError(Exception):
    """Base of the errors framesink raises."""


class RefusalError(FramesinkError, ValueError):
    """Input the daemon refuses; ``reason`` is a short, stable code."""

    def __init__(self, reason: str, detail: str, acquisition: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.acquisition = acquisition
