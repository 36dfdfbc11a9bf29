"""Acquisition routing: the per-acquisition state machine (pure, no IO).

Turns decoded messages into actions for the writers: open, write a run of frames,
zero-fill a gap, count dropped frames, finish. Sequence and index checks live here:
gaps become missing ranges, late and duplicate frames are dropped and counted,
messages for unknown acquisitions are orphans.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._layout import FrameLayout
from ._record import FinishReason
from ._status import AcquisitionState
from ._wire import AbortHeader, FramesHeader, Message, StartHeader, StopHeader, WireError

RECENTLY_FINISHED = 256


@dataclass(frozen=True)
class Open:
    acquisition: str
    start: StartHeader
    layout: FrameLayout


@dataclass(frozen=True)
class Write:
    """Write ``count`` frames starting at file index ``index`` from ``payload``."""

    acquisition: str
    index: int
    count: int
    payload: memoryview
    frame_metadata: Sequence[Mapping[str, Any] | None] | None


@dataclass(frozen=True)
class Skip:
    """Frames ``first``..``first+count-1`` will never come: zero-fill and record them."""

    acquisition: str
    first: int
    count: int


@dataclass(frozen=True)
class Drop:
    """Frames received but not written (late, duplicate or beyond the shape)."""

    acquisition: str
    count: int


@dataclass(frozen=True)
class Finish:
    acquisition: str
    reason: FinishReason
    metadata: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class SeqGap:
    """``missed`` messages of the acquisition never arrived (seen from ``seq``)."""

    acquisition: str
    missed: int


Action = Open | Write | Skip | Drop | Finish | SeqGap


@dataclass
class _Acquisition:
    layout: FrameLayout
    last_seq: int = 0
    next_index: int = 0
    last_activity: float = 0.0
    seq_gaps: int = 0


@dataclass
class Router:
    """Tracks open acquisitions and decides what happens to each message."""

    idle_timeout: float = 60.0
    max_open: int = 16
    max_gap_bytes: int = 16 << 30
    open: dict[str, _Acquisition] = field(default_factory=dict)
    finished: OrderedDict[str, AcquisitionState] = field(default_factory=OrderedDict)

    def route(self, message: Message, now: float) -> list[Action]:
        """Actions for one message; raise WireError when it must be rejected."""
        header = message.header
        if isinstance(header, StartHeader):
            return self._start(header, now)
        acquisition = self.open.get(header.acquisition)
        if acquisition is None:
            if header.acquisition in self.finished:
                raise WireError(
                    "late_message",
                    f"{header.type} for acquisition {header.acquisition!r}, which already ended",
                    header.acquisition,
                )
            raise WireError(
                "orphan",
                f"{header.type} for unknown acquisition {header.acquisition!r} (never started, "
                "or its start was lost)",
                header.acquisition,
            )
        missed = self._check_seq(header.acquisition, acquisition, header.seq)
        if isinstance(header, FramesHeader):
            assert message.payload is not None
            self._check_frames(header, acquisition, message.payload)
        acquisition.last_seq = header.seq
        acquisition.seq_gaps += missed
        acquisition.last_activity = now
        actions: list[Action] = [SeqGap(header.acquisition, missed)] if missed else []
        if isinstance(header, FramesHeader):
            assert message.payload is not None
            return actions + self._frames(header, acquisition, message.payload)
        if isinstance(header, StopHeader):
            return actions + self._stop(header, acquisition)
        assert isinstance(header, AbortHeader)
        metadata = None if header.reason is None else {"abort_reason": header.reason}
        return actions + self._finish(header.acquisition, FinishReason.ABORT, metadata)

    def expire(self, now: float) -> list[Action]:
        """Finish every acquisition idle for ``idle_timeout`` seconds."""
        idle = [
            name
            for name, acquisition in self.open.items()
            if now - acquisition.last_activity >= self.idle_timeout
        ]
        return [action for name in idle for action in self._finish(name, FinishReason.TIMEOUT)]

    def next_deadline(self) -> float | None:
        """When the next idle timeout falls due (monotonic seconds), if any."""
        if not self.open:
            return None
        return min(a.last_activity for a in self.open.values()) + self.idle_timeout

    def extend_deadlines(self, seconds: float) -> None:
        """Pause the idle clock: the receiver was blocked, not the publishers idle."""
        for acquisition in self.open.values():
            acquisition.last_activity += seconds

    def finish_all(self, reason: FinishReason) -> list[Action]:
        """Finish every open acquisition (shutdown)."""
        return [action for name in list(self.open) for action in self._finish(name, reason)]

    def fail_all(self, error: str) -> list[Action]:
        """End every open acquisition as failed with ``error`` (e.g. the disk is full)."""
        actions: list[Action] = []
        for name in list(self.open):
            del self.open[name]
            self._remember(name, AcquisitionState.FAILED)
            actions.append(Finish(name, FinishReason.ERROR, error=error))
        return actions

    def fail(self, acquisition: str) -> None:
        """Forget an acquisition whose writer failed; later messages count as late."""
        self.open.pop(acquisition, None)
        self._remember(acquisition, AcquisitionState.FAILED)

    # -- message kinds ---------------------------------------------------------------
    def _start(self, header: StartHeader, now: float) -> list[Action]:
        if header.acquisition in self.open:
            raise WireError(
                "duplicate_start",
                f"acquisition {header.acquisition!r} is already open; its second start is ignored",
                header.acquisition,
            )
        if len(self.open) >= self.max_open:
            raise WireError(
                "too_many_open",
                f"{len(self.open)} acquisitions are open (limit {self.max_open})",
                header.acquisition,
            )
        layout = header.layout()
        self.open[header.acquisition] = _Acquisition(layout, last_activity=now)
        self.finished.pop(header.acquisition, None)
        return [Open(header.acquisition, header, layout)]

    def _check_seq(self, name: str, acquisition: _Acquisition, seq: int) -> int:
        """Validate ``seq`` (not yet recorded); return how many messages it skips."""
        if seq <= acquisition.last_seq:
            raise WireError(
                "seq_backwards",
                f"seq {seq} is not after the last seq {acquisition.last_seq} "
                "(replayed or reordered)",
                name,
            )
        return seq - acquisition.last_seq - 1

    def _check_frames(
        self, header: FramesHeader, acquisition: _Acquisition, payload: memoryview
    ) -> None:
        """Reject a frames message before it changes any state."""
        layout = acquisition.layout
        name = header.acquisition
        expected = header.count * layout.frame_bytes
        if payload.nbytes != expected:
            raise WireError(
                "payload_size",
                f"payload has {payload.nbytes} bytes; {header.count} frames of "
                f"{list(layout.frame_shape)} {layout.dtype.name} need {expected}",
                name,
            )
        first, capacity = header.index, layout.capacity
        gap = (first if capacity is None else min(first, capacity)) - acquisition.next_index
        if gap * layout.frame_bytes > self.max_gap_bytes:
            raise WireError(
                "gap_too_large",
                f"index {first} would leave {gap} frames missing after frame "
                f"{acquisition.next_index - 1} (limit {self.max_gap_bytes} bytes)",
                name,
            )

    def _frames(
        self, header: FramesHeader, acquisition: _Acquisition, payload: memoryview
    ) -> list[Action]:
        """Write, gap-fill and drop actions for a checked frames message."""
        layout = acquisition.layout
        name = header.acquisition
        first, end = header.index, header.index + header.count
        capacity = layout.capacity
        writable_end = end if capacity is None else min(end, capacity)
        gap = (first if capacity is None else min(first, capacity)) - acquisition.next_index
        actions: list[Action] = []
        if gap > 0:
            actions.append(Skip(name, acquisition.next_index, gap))
            acquisition.next_index += gap
        skip_in_message = max(0, acquisition.next_index - first)
        write_count = max(0, writable_end - max(first, acquisition.next_index))
        if write_count:
            start = skip_in_message * layout.frame_bytes
            view = payload.cast("B")[start : start + write_count * layout.frame_bytes]
            metadata = header.frame_metadata
            sliced = (
                None
                if metadata is None
                else metadata[skip_in_message : skip_in_message + write_count]
            )
            actions.append(Write(name, acquisition.next_index, write_count, view, sliced))
            acquisition.next_index += write_count
        dropped = header.count - write_count
        if dropped:
            actions.append(Drop(name, dropped))
        if capacity is not None and acquisition.next_index >= capacity:
            actions.extend(self._finish(name, FinishReason.STOP))
        return actions

    def _stop(self, header: StopHeader, acquisition: _Acquisition) -> list[Action]:
        """Stop; frames the publisher says it sent but that never came become missing."""
        actions: list[Action] = []
        sent = header.frame_count
        capacity = acquisition.layout.capacity
        if sent is not None:
            end = sent if capacity is None else min(sent, capacity)
            tail = end - acquisition.next_index
            if tail > 0 and tail * acquisition.layout.frame_bytes <= self.max_gap_bytes:
                actions.append(Skip(header.acquisition, acquisition.next_index, tail))
        return actions + self._finish(header.acquisition, FinishReason.STOP, header.metadata)

    def _finish(
        self, name: str, reason: FinishReason, metadata: dict[str, Any] | None = None
    ) -> list[Action]:
        self.open.pop(name, None)
        self._remember(name, AcquisitionState.FINISHED)
        return [Finish(name, reason, metadata)]

    def _remember(self, name: str, state: AcquisitionState) -> None:
        self.finished[name] = state
        self.finished.move_to_end(name)
        while len(self.finished) > RECENTLY_FINISHED:
            self.finished.popitem(last=False)
