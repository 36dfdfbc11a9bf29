"""From received messages to work for the writer sessions, under one lock.

The router decides what each message means; this turns its actions into sessions
(one per acquisition run, each with its writer thread), frames admitted within the
byte budget (:mod:`._admission`), slots lent from shared-memory rings
(:mod:`._ring_intake`), and counts. A run keeps its session until its files are final,
even when a new run of the same acquisition id has started meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, assert_never

import numpy as np

from ..core import (
    AcquisitionEntry,
    Action,
    Counter,
    Drop,
    Finish,
    FinishReason,
    FramesHeader,
    Message,
    Open,
    RefusalError,
    Router,
    SeqGap,
    SinkFactory,
    SinkSpec,
    Skip,
    StartHeader,
    StorageOptions,
    Write,
    decode,
)
from ..transport import IngestSource, Received, Ring, RingLease
from ._admission import Admission
from ._counters import Counters
from ._disk import DiskWatch
from ._ring_intake import RingIntake
from ._session import Session, WriteTimer, ring_gather_bytes
from ._sessions import Sessions, report_overload
from ._settings import Settings

log = logging.getLogger(__name__)

RECEIVE_BATCH = 256
"""The most messages the receive loop takes from a socket in one turn."""
GROUP_BYTES = 256 << 10
"""Messages are handed to the dispatcher in groups of about this many bytes."""
RING_MESSAGE_COST = 4096
"""What a queued shared-memory message counts against ``queue_bytes``: the daemon holds
only its bookkeeping (well under this), the pixels stay in the publisher's ring."""


class Dispatcher:
    """Routes messages to writer sessions; every public method takes the lock."""

    def __init__(self, settings: Settings, counters: Counters, sink_factory: SinkFactory) -> None:
        self.settings = settings
        self.counters = counters
        self.router = Router(
            idle_timeout=settings.idle_timeout,
            max_open=settings.max_open,
            max_gap_bytes=int(settings.max_gap_bytes),
            start_timeout=settings.start_timeout,
            max_idle_timeout=settings.max_idle_timeout,
            max_seq_gap=settings.max_seq_gap,
        )
        self.admission = Admission(int(settings.queue_bytes), waits=settings.socket != "sub")
        self.rings = RingIntake()
        self.sessions = Sessions(counters)
        self.disk = DiskWatch(settings.data_root, int(settings.min_free_bytes))
        self.write_timer: WriteTimer | None = None
        """Told how long each write to a sink took (the metrics' latency histogram)."""
        self.sender_allowed: Callable[[str], bool] | None = None
        """With CURVE: whether an authenticated key is (still) allowed."""
        self._sink_factory = sink_factory
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    # -- messages ----------------------------------------------------------------------
    def handle(self, parts: list[memoryview], sender: str | None = None) -> None:
        """Handle one message (``sender``: the peer's CURVE key, when CURVE is on)."""
        self.handle_many([Received(parts, sender)])

    def handle_many(self, messages: Sequence[Received]) -> None:
        """Handle messages in order, as :meth:`handle` would one by one.

        Frames messages that follow each other (seq, index) with their pixels back to
        back in one ring are routed as one run: at camera rates of small frames that
        spares most of the per-message work.
        """
        max_header_bytes = int(self.settings.max_header_bytes)
        with self._lock:
            self.counters.add(Counter.MESSAGES, len(messages))
            run: list[FramesHeader] = []
            run_sender: str | None = None
            for received in messages:
                if not self._from_allowed_key(received.sender):
                    continue
                try:
                    message: Message | None = decode(received.parts, max_header_bytes)
                except Exception as exc:  # noqa: BLE001 - RefusalError or a bug: _reject counts and logs it
                    self._reject(exc)
                    message = None
                header = None if message is None else message.header
                if run and received.sender == run_sender and _continues(run[-1], header):
                    assert isinstance(header, FramesHeader)
                    run.append(header)
                    continue
                self._route_run(run, run_sender)
                run, run_sender = [], received.sender
                if message is None:
                    continue
                if _in_ring(message.header):
                    assert isinstance(message.header, FramesHeader)
                    run.append(message.header)
                else:
                    self._route(message, received.sender)
            self._route_run(run, run_sender)

    def _from_allowed_key(self, sender: str | None) -> bool:
        """False (and the message rejected) for a key removed since it connected."""
        allowed = self.sender_allowed
        if allowed is None or sender is None or allowed(sender):
            return True
        self.counters.reject(_revoked(sender))
        return False

    def act(self, decide: Callable[[Router], list[Action]]) -> list[Action]:
        """Carry out what ``decide`` has the router do (under the lock); return it."""
        with self._lock:
            actions = decide(self.router)
            self._apply(actions)
            return actions

    def _reject(self, exc: Exception) -> None:
        if isinstance(exc, RefusalError):
            self.counters.reject(exc)
            return
        # A bug hit by one message must not take the daemon down.
        log.error("internal error while handling a message; it is rejected", exc_info=exc)
        self.counters.reject(RefusalError("internal_error", f"{type(exc).__name__}: {exc}"))

    def _route(self, message: Message, sender: str | None) -> None:
        lease: RingLease | None = None
        try:
            header = message.header
            if isinstance(header, FramesHeader) and header.shm is not None:
                if header.acquisition in self.router.open:
                    lease = self._lend(header, sender)
                    message = Message(message.topic, header, lease.view)
                else:  # the router refuses it as late or orphan, before its slot matters
                    message = Message(message.topic, header, memoryview(b""))
            self._apply(self.router.route(message, time.monotonic(), sender), lease)
        except Exception as exc:  # noqa: BLE001 - RefusalError or a bug: _reject counts and logs it
            if isinstance(exc, RefusalError) and isinstance(message.header, StartHeader):
                self.sessions.note_refused(message.header.acquisition, exc)
            self._reject(exc)
        finally:
            if lease is not None:  # a lease no writer took is freed now
                lease.release()

    def _lend(self, header: FramesHeader, sender: str | None) -> RingLease:
        """The message's slot; a slot refused still counts the message as received."""
        try:
            lease = self.rings.lend(header)
        except RefusalError:
            self.router.take_seq(header, time.monotonic(), sender)
            raise
        assert lease is not None
        return lease

    def _route_run(self, run: list[FramesHeader], sender: str | None) -> None:
        """Route ring frames messages that follow each other as one run; if the run
        cannot be lent or routed whole (any refusal), one by one, as they came."""
        if len(run) > 1 and self._take_run(run, sender):
            return
        for header in run:
            self._route(Message(b"", header, None), sender)

    def _take_run(self, run: list[FramesHeader], sender: str | None) -> bool:
        session = self.sessions.receiving.get(run[0].acquisition)
        if session is None or session.failed:
            return False
        try:
            lease = self.rings.lend_run(run)
        except RefusalError:
            return False
        try:
            actions = self.router.route_run(run, lease.view, time.monotonic(), sender)
        except RefusalError:
            lease.release()
            return False
        try:
            self._apply(actions, lease)
        except Exception as exc:  # noqa: BLE001 - a bug: _reject counts and logs it
            self._reject(exc)
        finally:
            lease.release()
        return True

    def pause_clock(self, seconds: float) -> None:
        """The daemon was not reading for ``seconds``: that was not the publishers' idleness."""
        with self._lock:
            self.router.extend_deadlines(seconds)

    def _apply(self, actions: Sequence[Action], lease: RingLease | None = None) -> None:
        """Carry out the router's actions; a Write's pixels may lie in ``lease``."""
        for action in actions:
            match action:
                case Open():
                    self._open(action)
                case SeqGap(acquisition, missed):
                    self.counters.add(Counter.SEQ_GAPS, missed)
                    log.warning(
                        "acquisition %s: %d messages never arrived (seq gap)", acquisition, missed
                    )
                    self._to_session(action, None)
                case Write() | Skip() | Drop() | Finish():
                    self._to_session(action, lease)
                case _:
                    assert_never(action)

    def _to_session(
        self, action: Write | Skip | Drop | Finish | SeqGap, lease: RingLease | None
    ) -> None:
        session = self.sessions.receiving.get(action.acquisition)
        if session is None:
            raise RuntimeError(f"acquisition {action.acquisition!r} is open but has no session")
        if session.failed:
            self._refuse_for_failed(session, action)
            return
        match action:
            case Write():
                self._write(session, action, lease)
            case Drop(_, count):
                self.counters.add(Counter.FRAMES_DROPPED, count)
                session.apply(action)
            case Finish():
                session.apply(action)
                self.sessions.stop_receiving(session)
                self.rings.detach(action.acquisition)
            case Skip() | SeqGap():
                session.apply(action)
            case _:
                assert_never(action)

    def _refuse_for_failed(
        self, session: Session, action: Write | Skip | Drop | Finish | SeqGap
    ) -> None:
        self._retire_failed(session)
        if isinstance(action, Write):
            self.counters.add(Counter.FRAMES_RECEIVED, action.count)
            session.frames_lost += action.count
        if not isinstance(action, Finish):
            self.counters.reject(_not_applied(action, session))

    def _open(self, action: Open) -> None:
        start = action.start
        try:
            ring = self.rings.ring_of(action.acquisition, start)
            self.disk.refuse_start_when_low()
            sink = self._sink_factory(sink_spec(self.settings, action))
            sink.prepare()
        except RefusalError as exc:
            self._refuse_start(action, exc)
            return
        except (OSError, ValueError) as exc:
            self._refuse_start(action, RefusalError("bad_output", str(exc), action.acquisition))
            return
        except Exception:
            self.router.fail(action.acquisition)
            raise
        session = Session(
            action.acquisition,
            action.layout,
            sink,
            self.admission.budget,
            write_timer=self.write_timer,
            **({} if ring is None else ring_batches(ring)),
        )
        self.sessions.add(session)
        if ring is not None:
            self.rings.attach(action.acquisition, ring)
        self.counters.add(Counter.ACQUISITIONS_STARTED)
        log.info("acquisition %s started -> %s", action.acquisition, sink.progress().path)

    def _refuse_start(self, action: Open, error: RefusalError) -> None:
        self.router.refuse(action.acquisition)
        self.counters.add(Counter.ACQUISITIONS_REJECTED)
        self.sessions.note_refused(action.acquisition, error)
        self.counters.reject(error)

    def _write(self, session: Session, action: Write, lease: RingLease | None) -> None:
        """Queue the frames within the budget; the writer releases ``lease`` once written."""
        layout = session.layout
        frames = np.frombuffer(action.payload, dtype=layout.dtype).reshape(
            action.count, *layout.frame_shape
        )
        self.counters.add(Counter.FRAMES_RECEIVED, action.count)
        # The budget bounds the daemon's own memory: pixels in a ring stay the publisher's.
        cost = frames.nbytes if lease is None else RING_MESSAGE_COST
        admitted = self.admission.admit(cost, self._lock, lambda: session.done)
        if admitted.waited:  # messages waited in ZeroMQ meanwhile: that is not idleness
            self.router.extend_deadlines(admitted.waited)
        if not admitted.granted:
            self.counters.add(Counter.FRAMES_LOST_OVERLOAD, action.count)
            session.apply(Skip(action.acquisition, action.index, action.count))
            session.unreported_overload += action.count
            report_overload(session)
            return
        session.write(
            frames, action.frame_metadata, cost, None if lease is None else lease.hand_over()
        )

    def _retire_failed(self, session: Session) -> None:
        """A session whose writer failed: its acquisition ends; later messages are late."""
        if self.sessions.stop_receiving(session):
            self.rings.detach(session.acquisition)
            self.router.fail(session.acquisition)
        session.apply(Finish(session.acquisition, FinishReason.ERROR, error=session.error))

    # -- sessions ----------------------------------------------------------------------
    def reap(self) -> None:
        """Retire failed sessions and move finished ones to the recent list."""
        with self._lock:
            self.sessions.reap(self._retire_failed)

    def join(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s in all) until every session's files are final."""
        deadline = time.monotonic() + timeout
        with self._lock:
            sessions = list(self.sessions.live)
        for session in sessions:
            if not session.join(max(0.0, deadline - time.monotonic())):
                log.error("acquisition %s did not finish writing in time", session.acquisition)
        self.reap()

    def entry_of(self, name: str) -> AcquisitionEntry | None:
        """The newest entry of ``name`` (open, finished, failed or refused)."""
        with self._lock:
            return self.sessions.entry_of(name, self.router.describe_open(time.monotonic()))

    def entries(self) -> tuple[list[AcquisitionEntry], list[AcquisitionEntry]]:
        """Status entries: (live sessions, recently finished); call with the lock held."""
        return self.sessions.entries(self.router.describe_open(time.monotonic()))


def receive_batch(
    dispatcher: Dispatcher, source: IngestSource, deadline: float | None = None
) -> int:
    """Receive up to RECEIVE_BATCH waiting messages, none after ``deadline``;
    return how many.

    They are handled in groups of up to GROUP_BYTES: header-only (shared-memory)
    messages go many at a time, pixels over the socket one message at a time, so
    ZeroMQ's high-water mark still bounds what waits outside the queue budget.
    """
    received = 0
    group: list[Received] = []
    group_bytes = 0
    for message in source.receive(RECEIVE_BATCH):
        received += 1
        group.append(message)
        group_bytes += sum(map(len, message.parts))  # 1-D byte views: len == nbytes
        if group_bytes >= GROUP_BYTES:
            dispatcher.handle_many(group)
            group, group_bytes = [], 0
            if deadline is not None and time.monotonic() >= deadline:
                return received
    if group:
        dispatcher.handle_many(group)
    return received


def _revoked(sender: str) -> RefusalError:
    return RefusalError(
        "key_revoked",
        f"the client key {sender} was removed from the allowed clients (SIGHUP); "
        "its connection is still open, its messages are refused",
    )


def _not_applied(action: Write | Skip | Drop | SeqGap, session: Session) -> RefusalError:
    return RefusalError(
        "acquisition_failed",
        f"{type(action).__name__.lower()} not applied: the acquisition failed ({session.error})",
        action.acquisition,
    )


def sink_spec(settings: Settings, action: Open) -> SinkSpec:
    """What the sink of the acquisition ``action`` opens needs: the start and the settings."""
    start = action.start
    return SinkSpec(
        acquisition=action.acquisition,
        data_root=settings.data_root,
        output_path=start.output.output_path,
        name=start.output.output_name,
        on_exists=settings.on_exists,
        metadata=start.metadata,
        layout=action.layout,
        format=start.format or settings.format,
        options=storage_options(settings, start),
        fsync_interval=settings.fsync_interval or None,
    )


def storage_options(settings: Settings, start: StartHeader) -> StorageOptions:
    """The start's codec and level, else the daemon's (its level applies to its own codec
    only: a start naming another codec without a level gets that codec's default)."""
    compression = start.compression or settings.compression
    level = start.compression_level
    if level is None and compression == settings.compression:
        level = settings.compression_level
    return StorageOptions.create(
        direct_io=settings.direct_io,
        compression=compression,
        compression_level=level,
        chunk_shape=start.chunk_shape or settings.chunk_shape,
        shard_frames=start.shard_frames or settings.shard_frames,
        acquisition=start.acquisition,
    )


def ring_batches(ring: Ring) -> dict[str, Any]:
    """How a session writing from ``ring`` batches: a quarter of the ring at most, and
    the ring's releases sent once each batch is written."""
    return {"after_release": ring.flush, "gather_bytes": ring_gather_bytes(ring.size)}


def _in_ring(header: object) -> bool:
    """A frames header whose pixels are in a ring, without per-frame metadata."""
    return (
        isinstance(header, FramesHeader)
        and header.shm is not None
        and header.frame_metadata is None
    )


def _continues(previous: FramesHeader, header: object) -> bool:
    """Whether ``header`` is the ring frames message right after ``previous`` (seq,
    index and slot: its pixels follow the previous ones in the ring)."""
    if not _in_ring(header) or not isinstance(header, FramesHeader):
        return False
    assert previous.shm is not None
    assert header.shm is not None
    return (
        header.acquisition == previous.acquisition
        and header.seq == previous.seq + 1
        and header.index == previous.index + previous.count
        and header.shm.offset == previous.shm.offset + previous.shm.length
    )
