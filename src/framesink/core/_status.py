"""The daemon's status as it crosses the control endpoint: typed, so that a misspelt
counter or key fails the type checker instead of creating a value nobody reads (pure).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from ._compression import Compression
from ._record import FinishReason, FrameCounts


class RunState(StrEnum):
    """Where the daemon is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class AcquisitionState(StrEnum):
    """Where an acquisition is in its life."""

    OPEN = "open"
    FINISHED = "finished"
    FAILED = "failed"
    REFUSED = "refused"
    """Its start was refused (``refusal`` says why); nothing was written."""


class Counter(StrEnum):
    """Every counter the daemon keeps (monotonic since start)."""

    MESSAGES = "messages"
    BAD_MESSAGES = "bad_messages"
    ORPHAN_MESSAGES = "orphan_messages"
    LATE_MESSAGES = "late_messages"
    DUPLICATE_STARTS = "duplicate_starts"
    SEQ_GAPS = "seq_gaps"
    PEER_DISCONNECTS = "peer_disconnects"
    AUTH_FAILURES = "auth_failures"
    RINGS_REFUSED = "rings_refused"
    FRAMES_RECEIVED = "frames_received"
    FRAMES_WRITTEN = "frames_written"
    FRAMES_MISSING = "frames_missing"
    FRAMES_DROPPED = "frames_dropped"
    FRAMES_LOST_OVERLOAD = "frames_lost_overload"
    BYTES_WRITTEN = "bytes_written"
    ACQUISITIONS_STARTED = "acquisitions_started"
    ACQUISITIONS_FINISHED = "acquisitions_finished"
    ACQUISITIONS_FAILED = "acquisitions_failed"
    ACQUISITIONS_REJECTED = "acquisitions_rejected"


REJECTION_REASONS = (
    "bad_multipart",
    "not_msgpack",
    "header_not_map",
    "header_too_large",
    "bad_version",
    "bad_type",
    "bad_start",
    "bad_frames",
    "bad_stop",
    "bad_abort",
    "missing_payload",
    "unexpected_payload",
    "payload_size",
    "orphan",
    "late_message",
    "duplicate_start",
    "too_many_open",
    "volume_too_large",
    "seq_backwards",
    "seq_too_far",
    "gap_too_large",
    "key_revoked",
    "not_owner",
    "bad_shm",
    "shm_in_use",
    "acquisition_failed",
    "bad_format",
    "bad_compression",
    "bad_output",
    "internal_error",
)
"""Every reason a message is rejected with (docs/protocol.md, *Errors*, lists the same)."""


class CounterValues(BaseModel):
    """The value of every :class:`Counter`, plus rejected messages by reason code."""

    model_config = ConfigDict(extra="forbid")

    messages: int = 0
    bad_messages: int = 0
    orphan_messages: int = 0
    late_messages: int = 0
    duplicate_starts: int = 0
    seq_gaps: int = 0
    peer_disconnects: int = 0
    auth_failures: int = 0
    rings_refused: int = 0
    frames_received: int = 0
    frames_written: int = 0
    frames_missing: int = 0
    frames_dropped: int = 0
    frames_lost_overload: int = 0
    bytes_written: int = 0
    acquisitions_started: int = 0
    acquisitions_finished: int = 0
    acquisitions_failed: int = 0
    acquisitions_rejected: int = 0
    rejected_by_reason: dict[str, int] = {}

    def value(self, counter: Counter) -> int:
        number: int = getattr(self, counter.value)
        return number


class AcquisitionEntry(BaseModel):
    """One acquisition as the status shows it (open ones and recently finished)."""

    model_config = ConfigDict(extra="forbid")

    acquisition: str
    state: AcquisitionState
    path: str
    frames_written: int
    frames_missing: int
    frames_dropped: int
    messages_lost: int
    bytes_written: int
    direct_io: bool
    compression: Compression = Compression.NONE
    queued_bytes: int
    frames_discarded_after_error: int
    frames_per_s: float | None
    started: str
    complete: bool
    reason: FinishReason | None
    error: str | None
    rejected_messages: int = 0
    idle_s: float | None = None
    idle_timeout: float | None = None
    refusal: str | None = None
    """Why its start was refused (the reason code), for state ``refused``."""

    @classmethod
    def refused(cls, acquisition: str, reason: str, detail: str, when: str) -> AcquisitionEntry:
        """The entry of a start the daemon refused."""
        return cls(
            acquisition=acquisition,
            state=AcquisitionState.REFUSED,
            path="",
            **FrameCounts().model_dump(),
            direct_io=False,
            queued_bytes=0,
            frames_discarded_after_error=0,
            frames_per_s=None,
            started=when,
            complete=False,
            reason=None,
            error=detail,
            refusal=reason,
        )


class Rejection(BaseModel):
    """A rejected message, kept for the status."""

    model_config = ConfigDict(extra="forbid")

    time: str
    reason: str
    detail: str
    acquisition: str | None


class RecoveryFailure(BaseModel):
    """An interrupted acquisition that recovery could not rebuild."""

    model_config = ConfigDict(extra="forbid")

    folder: str
    error: str


class DaemonStatus(BaseModel):
    """The reply to the control endpoint's ``status`` command."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = True
    version: str
    state: RunState
    recovering: bool
    recovery_failures: list[RecoveryFailure] = []
    uptime_s: float
    data_root: str
    free_bytes: int | None
    socket: str
    ingest: list[str]
    queued_bytes: int
    queue_limit_bytes: int
    metrics: str | None = None
    shared_memory: str | None = None
    shared_memory_ingest: str | None = None
    """Where publishers of a ring send their messages (headers only); None without."""
    counters: CounterValues
    acquisitions: list[AcquisitionEntry]
    recent_errors: list[Rejection]

    def entry(self, acquisition: str) -> AcquisitionEntry | None:
        """The newest entry for ``acquisition``, if the status lists it."""
        return next((a for a in self.acquisitions if a.acquisition == acquisition), None)
