"""Acquisition routing: the per-acquisition state machine (pure, no IO).

Turns decoded messages into actions for the writers: open, write a run of frames,
zero-fill a gap, count dropped frames, finish. Sequence and index checks live here:
gaps become missing ranges, late and duplicate frames are dropped and counted,
messages for unknown acquisitions are orphans.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import RefusalError
from ._layout import FrameLayout
from ._record import FinishReason
from ._status import AcquisitionState
from ._wire import AbortHeader, FramesHeader, Message, StartHeader, StopHeader

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
    idle_timeout: float
    started: float
    start_timeout: float
    owner: str | None = None
    last_seq: int = 0
    next_index: int = 0
    last_activity: float = 0.0
    seq_gaps: int = 0
    unreported_gap: int = 0
    """Messages missed before a message that arrived but was refused (reported next)."""


@dataclass(frozen=True)
class OpenAcquisition:
    """What the router knows of an open acquisition (for the status)."""

    acquisition: str
    idle_timeout: float
    idle_s: float
    messages: int


@dataclass
class Router:
    """Tracks open acquisitions and decides what happens to each message.

    An acquisition ends with its stop or abort, or after ``idle_timeout`` seconds
    without a message (its start may ask for another, up to ``max_idle_timeout``); one
    that has received nothing since its start ends after ``start_timeout``, so starts
    that send nothing cannot hold the ``max_open`` slots for long.
    """

    idle_timeout: float = 60.0
    max_open: int = 16
    max_gap_bytes: int = 16 << 30
    start_timeout: float = 30.0
    max_idle_timeout: float = 86400.0
    max_seq_gap: int = 1_000_000
    open: dict[str, _Acquisition] = field(default_factory=dict)
    finished: OrderedDict[str, AcquisitionState] = field(default_factory=OrderedDict)

    def route(self, message: Message, now: float, sender: str | None = None) -> list[Action]:
        """Actions for one message; raise RefusalError when it must be rejected.

        ``sender`` is the authenticated key of the peer (CURVE), or None: an
        acquisition belongs to the key that started it.
        """
        header = message.header
        if isinstance(header, StartHeader):
            return self._start(header, now, sender)
        if isinstance(header, FramesHeader):
            assert message.payload is not None
            return self._route_frames([header], message.payload, now, sender)
        acquisition = self._owned(header.acquisition, header.type, sender)
        missed = self._check_seq(header.acquisition, acquisition, header.seq)
        actions = self._advance(header.acquisition, acquisition, missed, header.seq, now)
        if isinstance(header, StopHeader):
            return actions + self._stop(header, acquisition)
        assert isinstance(header, AbortHeader)
        metadata = None if header.reason is None else {"abort_reason": header.reason}
        return actions + self._finish(header.acquisition, FinishReason.ABORT, metadata)

    def route_run(
        self,
        run: Sequence[FramesHeader],
        payload: memoryview,
        now: float,
        sender: str | None = None,
    ) -> list[Action]:
        """Actions for frames messages that follow each other (seq + 1, index + count),
        their pixels back to back in ``payload``: what routing them one by one does, as
        one message. A single frames message is a run of one.

        Raises RefusalError, with nothing changed, when any message of the run (in
        practice the first) would be refused; the caller then routes them one by one.
        """
        return self._route_frames(run, payload, now, sender)

    def _route_frames(
        self, run: Sequence[FramesHeader], payload: memoryview, now: float, sender: str | None
    ) -> list[Action]:
        first, last = run[0], run[-1]
        name = first.acquisition
        acquisition = self._owned(name, first.type, sender)
        if len(run) > 1 and not _chained(run):
            raise ValueError("a run's messages must follow each other")
        count = last.index + last.count - first.index
        missed = self._check_seq(name, acquisition, first.seq)
        try:
            _check_frames(run, acquisition, payload, self.max_gap_bytes)
        except RefusalError:
            if len(run) == 1:
                self.take_seq(first, now, sender)
            raise
        actions = self._advance(name, acquisition, missed, last.seq, now)
        metadata = first.frame_metadata if len(run) == 1 else None
        writes = _frame_actions(
            name, acquisition, first.index, count, payload=payload, metadata=metadata
        )
        return actions + writes

    def take_seq(self, header: FramesHeader, now: float, sender: str | None) -> None:
        """A message of an open acquisition arrived and was refused for its content (its
        size, its slot): its ``seq`` counts as received, so the next one is no gap."""
        acquisition = self.open.get(header.acquisition)
        if acquisition is None or acquisition.owner != sender:
            return
        try:
            missed = self._check_seq(header.acquisition, acquisition, header.seq)
        except RefusalError:
            return
        acquisition.last_seq = header.seq
        acquisition.unreported_gap += missed
        acquisition.last_activity = now

    def _owned(self, name: str, kind: str, sender: str | None) -> _Acquisition:
        """The open acquisition ``name`` of ``sender``; RefusalError for any other."""
        acquisition = self.open.get(name)
        if acquisition is None:
            if name in self.finished:
                raise RefusalError(
                    "late_message",
                    f"{kind} for acquisition {name!r}, which already ended",
                    name,
                )
            raise RefusalError(
                "orphan",
                f"{kind} for unknown acquisition {name!r} (never started, or its start was lost)",
                name,
            )
        if acquisition.owner != sender:
            raise RefusalError(
                "not_owner",
                f"{kind} for acquisition {name!r} from a key that did not start it",
                name,
            )
        return acquisition

    def _advance(
        self, name: str, acquisition: _Acquisition, missed: int, last_seq: int, now: float
    ) -> list[Action]:
        """Take checked messages up to ``last_seq``; the ``missed`` ones before them are lost."""
        missed, acquisition.unreported_gap = missed + acquisition.unreported_gap, 0
        acquisition.last_seq = last_seq
        acquisition.seq_gaps += missed
        acquisition.last_activity = now
        return [SeqGap(name, missed)] if missed else []

    def expire(self, now: float) -> list[Action]:
        """Finish every acquisition whose deadline has passed (reason ``timeout``)."""
        due = [name for name, acquisition in self.open.items() if now >= _deadline(acquisition)]
        return [action for name in due for action in self._finish(name, FinishReason.TIMEOUT)]

    def next_deadline(self) -> float | None:
        """When the next timeout falls due (monotonic seconds), if any."""
        return min((_deadline(a) for a in self.open.values()), default=None)

    def describe_open(self, now: float) -> list[OpenAcquisition]:
        """The open acquisitions, oldest first."""
        return [
            OpenAcquisition(name, a.idle_timeout, round(now - a.last_activity, 3), a.last_seq)
            for name, a in sorted(self.open.items(), key=lambda item: item[1].started)
        ]

    def extend_deadlines(self, seconds: float) -> None:
        """Pause the idle clock: the receiver was blocked, not the publishers idle."""
        for acquisition in self.open.values():
            acquisition.last_activity += seconds

    def finish_all(self, reason: FinishReason) -> list[Action]:
        """Finish every open acquisition (shutdown)."""
        return [action for name in list(self.open) for action in self._finish(name, reason)]

    def fail_all(self, error: str) -> list[Action]:
        """End every open acquisition as failed with ``error`` (e.g. the disk is full)."""
        return self.fail_some(list(self.open), error)

    def fail_some(self, names: list[str], error: str) -> list[Action]:
        """End the open acquisitions ``names`` as failed with ``error``."""
        actions: list[Action] = []
        for name in names:
            if self.open.pop(name, None) is not None:
                self._remember(name, AcquisitionState.FAILED)
                actions.append(Finish(name, FinishReason.ERROR, error=error))
        return actions

    def end_on_request(
        self, name: str, reason: FinishReason, sender: str | None, admin: bool
    ) -> list[Action]:
        """Stop or abort ``name`` on an operator's request (the control endpoint);
        RefusalError when it is not open, or ``sender`` neither owns it nor is admin."""
        acquisition = self.open.get(name)
        if acquisition is None:
            ended = " (it already ended)" if name in self.finished else ""
            raise RefusalError("not_open", f"acquisition {name!r} is not open{ended}", name)
        if not admin and acquisition.owner != sender:
            raise RefusalError("not_owner", f"this key did not start {name!r}", name)
        metadata = (
            {"abort_reason": "aborted from the control endpoint"}
            if reason is FinishReason.ABORT
            else None
        )
        return self._finish(name, reason, metadata)

    def owned_by_others_than(self, allowed: Callable[[str], bool]) -> list[str]:
        """Open acquisitions started by a key that ``allowed`` no longer accepts."""
        return [
            name
            for name, acquisition in self.open.items()
            if acquisition.owner is not None and not allowed(acquisition.owner)
        ]

    def fail(self, acquisition: str) -> None:
        """Forget an acquisition whose writer failed; later messages count as late."""
        self.open.pop(acquisition, None)
        self._remember(acquisition, AcquisitionState.FAILED)

    def refuse(self, acquisition: str) -> None:
        """Forget an acquisition whose start was refused: it never was, so later
        messages for it are orphans."""
        self.open.pop(acquisition, None)

    # -- message kinds ---------------------------------------------------------------
    def _start(self, header: StartHeader, now: float, sender: str | None) -> list[Action]:
        if header.acquisition in self.open:
            raise RefusalError(
                "duplicate_start",
                f"acquisition {header.acquisition!r} is already open; its second start is ignored",
                header.acquisition,
            )
        if len(self.open) >= self.max_open:
            holders = ", ".join(a.acquisition for a in self.describe_open(now)[:5])
            raise RefusalError(
                "too_many_open",
                f"{len(self.open)} acquisitions are open (limit {self.max_open}), "
                f"oldest first: {holders}",
                header.acquisition,
            )
        layout = header.layout()
        step_cost = layout.frames_per_step * layout.page_cost
        if step_cost > self.max_gap_bytes:
            raise RefusalError(
                "volume_too_large",
                f"one step of shape {list(layout.leading_shape)} is {step_cost} bytes, more "
                f"than max_gap_bytes ({self.max_gap_bytes}) allows to zero-fill",
                header.acquisition,
            )
        idle_timeout = min(header.idle_timeout or self.idle_timeout, self.max_idle_timeout)
        self.open[header.acquisition] = _Acquisition(
            layout, idle_timeout, now, self.start_timeout, owner=sender, last_activity=now
        )
        self.finished.pop(header.acquisition, None)
        return [Open(header.acquisition, header, layout)]

    def _check_seq(self, name: str, acquisition: _Acquisition, seq: int) -> int:
        """Validate ``seq`` (not yet recorded); return how many messages it skips."""
        if seq <= acquisition.last_seq:
            raise RefusalError(
                "seq_backwards",
                f"seq {seq} is not after the last seq {acquisition.last_seq} "
                "(replayed or reordered)",
                name,
            )
        missed = seq - acquisition.last_seq - 1
        if missed > self.max_seq_gap:
            raise RefusalError(
                "seq_too_far",
                f"seq {seq} is {missed} messages ahead of the last seq {acquisition.last_seq} "
                f"(limit {self.max_seq_gap}); not adopted",
                name,
            )
        return missed

    def _stop(self, header: StopHeader, acquisition: _Acquisition) -> list[Action]:
        """Stop; frames the publisher says it sent but that never came become missing.

        A tail too large to zero-fill is not written but reported in the record's error.
        """
        actions: list[Action] = []
        sent, error = header.frame_count, None
        capacity = acquisition.layout.capacity
        if sent is not None:
            end = sent if capacity is None else min(sent, capacity)
            tail = end - acquisition.next_index
            if tail > 0 and tail * acquisition.layout.page_cost <= self.max_gap_bytes:
                actions.append(Skip(header.acquisition, acquisition.next_index, tail))
            elif tail > 0:
                error = (
                    f"the publisher sent {end} frames; the last {tail} never arrived and are "
                    f"too many to zero-fill (max_gap_bytes {self.max_gap_bytes})"
                )
        finish = self._finish(header.acquisition, FinishReason.STOP, header.metadata, error)
        return actions + finish

    def _finish(
        self,
        name: str,
        reason: FinishReason,
        metadata: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> list[Action]:
        self.open.pop(name, None)
        self._remember(name, AcquisitionState.FINISHED)
        return [Finish(name, reason, metadata, error)]

    def _remember(self, name: str, state: AcquisitionState) -> None:
        self.finished[name] = state
        self.finished.move_to_end(name)
        while len(self.finished) > RECENTLY_FINISHED:
            self.finished.popitem(last=False)


def _check_frames(
    run: Sequence[FramesHeader], acquisition: _Acquisition, payload: memoryview, max_gap_bytes: int
) -> None:
    """Reject frames messages before they change any state."""
    layout = acquisition.layout
    first = run[0]
    name = first.acquisition
    if len(run) == 1:
        expected = first.count * layout.frame_bytes
        if payload.nbytes != expected:
            raise RefusalError(
                "payload_size",
                f"payload has {payload.nbytes} bytes; {first.count} frames of "
                f"{list(layout.frame_shape)} {layout.dtype.name} need {expected}",
                name,
            )
    elif any(h.shm is None or h.shm.length != h.count * layout.frame_bytes for h in run):
        raise RefusalError("payload_size", "a message of the run has the wrong size", name)
    elif payload.nbytes != sum(h.count for h in run) * layout.frame_bytes:
        raise ValueError("a run's payload must hold exactly its frames")
    index, capacity = first.index, layout.capacity
    gap = (index if capacity is None else min(index, capacity)) - acquisition.next_index
    if gap * layout.page_cost > max_gap_bytes:
        raise RefusalError(
            "gap_too_large",
            f"index {index} would leave {gap} frames missing after frame "
            f"{acquisition.next_index - 1} (limit {max_gap_bytes} bytes)",
            name,
        )


def _frame_actions(
    name: str,
    acquisition: _Acquisition,
    first: int,
    count: int,
    *,
    payload: memoryview,
    metadata: Sequence[Mapping[str, Any] | None] | None,
) -> list[Action]:
    """Write, gap-fill and drop actions for ``count`` checked frames from ``first``."""
    layout = acquisition.layout
    end = first + count
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
        sliced = (
            None if metadata is None else metadata[skip_in_message : skip_in_message + write_count]
        )
        actions.append(Write(name, acquisition.next_index, write_count, view, sliced))
        acquisition.next_index += write_count
    dropped = count - write_count
    if dropped:
        actions.append(Drop(name, dropped))
    return actions


def _chained(run: Sequence[FramesHeader]) -> bool:
    """Whether each message follows the one before: same acquisition, seq + 1, index + count."""
    return all(
        header.acquisition == before.acquisition
        and header.seq == before.seq + 1
        and header.index == before.index + before.count
        and header.frame_metadata is None
        for before, header in itertools.pairwise(run)
    )


def _deadline(acquisition: _Acquisition) -> float:
    """Monotonic time at which ``acquisition`` times out if nothing more arrives."""
    timeout = acquisition.idle_timeout
    if acquisition.last_seq == 0:
        timeout = min(timeout, acquisition.start_timeout)
    return acquisition.last_activity + timeout
