"""From received messages to work for the writer sessions, under one lock.

The router decides what each message means; this turns its actions into sessions
(one per acquisition run, each with its writer thread), frames queued within the byte
budget, and counts. A run keeps its session until its files are final, even when a
new run of the same acquisition id has started meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import assert_never

import numpy as np

from ..core import (
    AcquisitionEntry,
    AcquisitionState,
    Action,
    ByteBudget,
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
    StorageOptions,
    Write,
    decode,
)
from ..transport import Received, Ring, RingLease, RingServer
from ._counters import Counters
from ._session import GATHER_BYTES, Session, WriteTimer, ring_gather_bytes
from ._settings import Settings

log = logging.getLogger(__name__)

RECENT_FINISHED = 50
RING_MESSAGE_COST = 4096
"""What a queued shared-memory message counts against ``queue_bytes``: the daemon holds
only its bookkeeping (well under this), the pixels stay in the publisher's ring."""
BUDGET_WAIT_S = 0.5


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
        self.budget = ByteBudget(int(settings.queue_bytes))
        self.sessions: list[Session] = []
        self.receiving: dict[str, Session] = {}
        self.recent: deque[AcquisitionEntry] = deque(maxlen=RECENT_FINISHED)
        self.free_bytes: int | None = None
        self.intake_deadline: float | None = None
        """Set at shutdown: no message waits for queue space beyond it."""
        self.rings: RingServer | None = None
        """Shared-memory rings, when the daemon accepts them."""
        self.rings_by_acquisition: dict[str, Ring] = {}
        self._lease: RingLease | None = None
        self.write_timer: WriteTimer | None = None
        """Told how long each write to a sink took (the metrics' latency histogram)."""
        self._sink_factory = sink_factory
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def close_intake(self, within: float) -> float:
        """From now on no message waits for queue space beyond ``within`` seconds (the
        first call decides); return that deadline."""
        if self.intake_deadline is None:
            self.intake_deadline = time.monotonic() + within
        return self.intake_deadline

    # -- messages ----------------------------------------------------------------------
    def handle(self, parts: list[memoryview], sender: str | None = None) -> None:
        """Decode, route and dispatch one message; reject it with a reason if it is bad.

        ``sender``: the peer's authenticated CURVE key, when CURVE is on.
        """
        self.handle_many([Received(parts, sender)])

    def handle_many(self, messages: Sequence[Received]) -> None:
        """Handle messages in order, as :meth:`handle` would one by one.

        Frames messages that follow each other (seq, index) with their pixels back to
        back in one ring are applied as one write when they are the plain case: at
        camera rates of small frames that spares most of the per-message work.
        """
        max_header_bytes = int(self.settings.max_header_bytes)
        with self._lock:
            self.counters.add(Counter.MESSAGES, len(messages))
            run: list[Message] = []
            run_sender: str | None = None
            for received in messages:
                try:
                    message: Message | None = decode(received.parts, max_header_bytes)
                except Exception as exc:  # noqa: BLE001 - RefusalError or a bug: _reject counts and logs it
                    self._reject(exc)
                    message = None
                if (
                    message is not None
                    and run
                    and received.sender == run_sender
                    and _continues(run[-1].header, message.header)
                ):
                    run.append(message)
                    continue
                self._route_run(run, run_sender)
                run, run_sender = [], received.sender
                if message is None:
                    continue
                if _in_ring(message.header):
                    run.append(message)
                else:
                    self._route(message, received.sender)
            self._route_run(run, run_sender)

    @contextmanager
    def _rejecting(self) -> Iterator[None]:
        """A message that cannot be applied is rejected with its reason and counted."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - RefusalError or a bug: _reject counts and logs it
            self._reject(exc)
        finally:
            if self._lease is not None:  # not handed to a writer: free it now
                self._lease.release()
                self._lease = None

    def _reject(self, exc: Exception) -> None:
        if isinstance(exc, RefusalError):
            self.counters.reject(exc)
            return
        # A bug hit by one message must not take the daemon down.
        log.error("internal error while handling a message; it is rejected", exc_info=exc)
        self.counters.reject(RefusalError("internal_error", f"{type(exc).__name__}: {exc}"))

    def _route(self, message: Message, sender: str | None) -> None:
        with self._rejecting():
            message = self._lend_slot(message)
            for action in self.router.route(message, time.monotonic(), sender):
                self._dispatch(action)

    def _route_run(self, run: list[Message], sender: str | None) -> None:
        if len(run) > 1 and self._take_run(run, sender):
            return
        for message in run:
            self._route(message, sender)

    def _take_run(self, run: list[Message], sender: str | None) -> bool:
        """Apply a run of ring frames messages as one write, if it is the plain case
        (Router.run_follows, each message's slot holding exactly its frames); False,
        with nothing changed, otherwise."""
        headers = [m.header for m in run if isinstance(m.header, FramesHeader)]
        first, last = headers[0], headers[-1]
        ring = self.rings_by_acquisition.get(first.acquisition)
        session = self.receiving.get(first.acquisition)
        if ring is None or session is None or session.failed:
            return False
        frame_bytes = session.layout.frame_bytes
        slots = tuple((h.shm.offset, h.shm.length) for h in headers if h.shm is not None)
        count = last.index + last.count - first.index
        if any(h.shm is None or h.shm.length != h.count * frame_bytes for h in headers):
            return False
        if not self.router.run_follows(first, count, sender):
            return False
        try:
            self._lease = ring.lend_run(slots, first.acquisition)
        except RefusalError:
            return False
        with self._rejecting():
            self._dispatch(self.router.take_run(first, last, self._lease.view, time.monotonic()))
        return True

    def _lend_slot(self, message: Message) -> Message:
        """A frames message whose pixels are in a ring gets them as its payload."""
        header = message.header
        if not isinstance(header, FramesHeader) or header.shm is None:
            return message
        ring = self.rings_by_acquisition.get(header.acquisition)
        if ring is None:
            raise RefusalError(
                "bad_shm",
                f"acquisition {header.acquisition!r} has no shared-memory ring (not open, or "
                "started without one)",
                header.acquisition,
            )
        self._lease = ring.lend(header.shm.offset, header.shm.length, header.acquisition)
        return Message(message.topic, header, self._lease.view)

    def expire(self, now: float) -> None:
        with self._lock:
            for action in self.router.expire(now):
                self._dispatch(action)

    def pause_clock(self, seconds: float) -> None:
        """The daemon was not reading for ``seconds``: that was not the publishers' idleness."""
        with self._lock:
            self.router.extend_deadlines(seconds)

    def finish_all(self, reason: FinishReason) -> None:
        with self._lock:
            for action in self.router.finish_all(reason):
                self._dispatch(action)

    def fail_all(self, error: str) -> int:
        """End every open acquisition as failed; return how many."""
        with self._lock:
            actions = self.router.fail_all(error)
            for action in actions:
                self._dispatch(action)
            return len(actions)

    def _dispatch(self, action: Action) -> None:
        match action:
            case Open():
                self._open(action)
            case SeqGap(acquisition, missed):
                self.counters.add(Counter.SEQ_GAPS, missed)
                log.warning(
                    "acquisition %s: %d messages never arrived (seq gap)", acquisition, missed
                )
                self._to_session(action)
            case Write() | Skip() | Drop() | Finish():
                self._to_session(action)
            case _:
                assert_never(action)

    def _to_session(self, action: Write | Skip | Drop | Finish | SeqGap) -> None:
        session = self.receiving.get(action.acquisition)
        if session is None:
            raise RuntimeError(f"acquisition {action.acquisition!r} is open but has no session")
        if session.failed:
            self._retire_failed(session)
            if isinstance(action, Write):
                self.counters.add(Counter.FRAMES_RECEIVED, action.count)
                session.frames_lost += action.count
            if not isinstance(action, Finish):
                self.counters.reject(
                    RefusalError(
                        "acquisition_failed",
                        f"{type(action).__name__.lower()} not applied: the acquisition failed "
                        f"({session.error})",
                        action.acquisition,
                    )
                )
            return
        match action:
            case Write():
                self._write(session, action)
            case Skip(_, _, count):
                session.skip(count)
            case Drop(_, count):
                self.counters.add(Counter.FRAMES_DROPPED, count)
                session.drop(count)
            case SeqGap(_, missed):
                session.lose_messages(missed)
            case Finish(_, reason, metadata, error):
                session.finish(reason, metadata, error)
                del self.receiving[action.acquisition]
                self._detach_ring(action.acquisition)
            case _:
                assert_never(action)

    def _open(self, action: Open) -> None:
        start = action.start
        try:
            ring = self._ring_of(action)
        except RefusalError as exc:
            self._refuse_start(action, exc)
            return
        try:
            self._refuse_when_disk_low()
            spec = SinkSpec(
                acquisition=action.acquisition,
                data_root=self.settings.data_root,
                output_path=start.output.output_path,
                name=start.output.output_name,
                on_exists=self.settings.on_exists,
                metadata=start.metadata,
                layout=action.layout,
                format=start.format or self.settings.format,
                options=StorageOptions(direct_io=self.settings.direct_io),
                fsync_interval=self.settings.fsync_interval or None,
            )
            sink = self._sink_factory(spec)
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
            self.budget,
            write_timer=self.write_timer,
            after_release=None if ring is None else ring.flush,
            gather_bytes=GATHER_BYTES if ring is None else ring_gather_bytes(ring.size),
        )
        self.sessions.append(session)
        self.receiving[action.acquisition] = session
        if ring is not None:
            self.rings_by_acquisition[action.acquisition] = ring
            ring.acquisitions += 1
        self.counters.add(Counter.ACQUISITIONS_STARTED)
        log.info("acquisition %s started -> %s", action.acquisition, sink.progress().path)

    def _detach_ring(self, acquisition: str) -> None:
        """The acquisition names no more slots: its ring may end once its publisher is done."""
        ring = self.rings_by_acquisition.pop(acquisition, None)
        if ring is not None:
            ring.acquisitions -= 1

    def _ring_of(self, action: Open) -> Ring | None:
        """The ring a start names (None without one); RefusalError when no such ring is known."""
        attached = action.start.shared_memory
        if attached is None:
            return None
        ring = None if self.rings is None else self.rings.ring(attached.ring)
        if ring is None:
            why = (
                "this daemon does not accept shared memory"
                if self.rings is None
                else (
                    "no registered ring has this token (the publisher must register it first, "
                    "and rings end when their publisher disconnects)"
                )
            )
            raise RefusalError("bad_shm", why, action.acquisition)
        return ring

    def _refuse_start(self, action: Open, error: RefusalError) -> None:
        self.router.fail(action.acquisition)
        self.counters.add(Counter.ACQUISITIONS_REJECTED)
        self.counters.reject(error)

    def _refuse_when_disk_low(self) -> None:
        if self.free_bytes is not None and self.free_bytes < int(self.settings.min_free_bytes):
            raise OSError(
                f"only {self.free_bytes} bytes free on the data root (minimum "
                f"{int(self.settings.min_free_bytes)}); acquisition refused"
            )

    def _write(self, session: Session, action: Write) -> None:
        layout = session.layout
        frames = np.frombuffer(action.payload, dtype=layout.dtype).reshape(
            action.count, *layout.frame_shape
        )
        self.counters.add(Counter.FRAMES_RECEIVED, action.count)
        # The budget bounds the daemon's own memory: pixels in a ring stay the publisher's.
        cost = frames.nbytes if self._lease is None else RING_MESSAGE_COST
        if not self._take_budget(session, cost):
            self.counters.add(Counter.FRAMES_LOST_OVERLOAD, action.count)
            session.skip(action.count)
            session.unreported_overload += action.count
            _report_overload(session)
            return
        lease, self._lease = self._lease, None
        session.write(frames, action.frame_metadata, cost, None if lease is None else lease.release)

    def _take_budget(self, session: Session, nbytes: int) -> bool:
        """Reserve queue space: PULL waits for it (backpressure), SUB never waits.

        At shutdown a PULL daemon waits only until the intake deadline; what then does
        not fit is recorded missing, like SUB overload.
        """
        if self.budget.acquire(nbytes, timeout=0):
            return True
        if self.settings.socket == "sub":
            return False
        started = time.monotonic()
        self._lock.release()
        try:
            while True:
                deadline = self.intake_deadline
                wait = BUDGET_WAIT_S
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if self.budget.acquire(nbytes, timeout=wait):
                    return True
                if session.done or (deadline is not None and time.monotonic() >= deadline):
                    return False
        finally:
            self._lock.acquire()
            # Messages waited in ZeroMQ meanwhile: that time is not idleness.
            self.router.extend_deadlines(time.monotonic() - started)

    def _retire_failed(self, session: Session) -> None:
        """A session whose writer failed: its acquisition ends; later messages are late."""
        if self.receiving.get(session.acquisition) is session:
            del self.receiving[session.acquisition]
            self._detach_ring(session.acquisition)
            self.router.fail(session.acquisition)
        session.finish(FinishReason.ERROR, error=session.error)

    # -- sessions ----------------------------------------------------------------------
    def reap(self) -> None:
        """Retire failed sessions and move finished ones to the recent list."""
        with self._lock:
            for session in list(self.sessions):
                _report_overload(session, force=True)
                if session.failed:
                    self._retire_failed(session)
                if not session.done:
                    continue
                self.sessions.remove(session)
                entry = session.entry()
                self.recent.appendleft(entry)
                self.counters.add(Counter.FRAMES_WRITTEN, entry.frames_written)
                self.counters.add(Counter.FRAMES_MISSING, entry.frames_missing)
                self.counters.add(Counter.BYTES_WRITTEN, entry.bytes_written)
                failed = entry.state is AcquisitionState.FAILED
                self.counters.add(
                    Counter.ACQUISITIONS_FAILED if failed else Counter.ACQUISITIONS_FINISHED
                )

    def join(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s in all) until every session's files are final."""
        deadline = time.monotonic() + timeout
        with self._lock:
            sessions = list(self.sessions)
        for session in sessions:
            if not session.join(max(0.0, deadline - time.monotonic())):
                log.error("acquisition %s did not finish writing in time", session.acquisition)
        self.reap()

    def entries(self) -> tuple[list[AcquisitionEntry], list[AcquisitionEntry]]:
        """Status entries: (live sessions, recently finished); call with the lock held."""
        by_acquisition = self.counters.rejections_by_acquisition
        clock = {a.acquisition: a for a in self.router.describe_open(time.monotonic())}
        live = []
        for session in self.sessions:
            entry = session.entry(by_acquisition.get(session.acquisition, 0))
            open_state = clock.get(session.acquisition)
            if open_state is not None and self.receiving.get(session.acquisition) is session:
                entry.idle_s, entry.idle_timeout = open_state.idle_s, open_state.idle_timeout
            live.append(entry)
        recent = [
            entry.model_copy(update={"rejected_messages": by_acquisition.get(entry.acquisition, 0)})
            for entry in self.recent
        ]
        return live, recent


def _in_ring(header: object) -> bool:
    """A frames header whose pixels are in a ring, without per-frame metadata."""
    return (
        isinstance(header, FramesHeader)
        and header.shm is not None
        and header.frame_metadata is None
    )


def _continues(previous: object, header: object) -> bool:
    """Whether ``header`` is the ring frames message right after ``previous`` (seq,
    index and slot: its pixels follow the previous ones in the ring)."""
    if not _in_ring(header) or not isinstance(header, FramesHeader):
        return False
    assert isinstance(previous, FramesHeader)
    assert previous.shm is not None
    assert header.shm is not None
    return (
        header.acquisition == previous.acquisition
        and header.seq == previous.seq + 1
        and header.index == previous.index + previous.count
        and header.shm.offset == previous.shm.offset + previous.shm.length
    )


def _report_overload(session: Session, force: bool = False) -> None:
    """Warn about frames lost to a full queue, at most once a second per acquisition."""
    now = time.monotonic()
    if not session.unreported_overload or (not force and now - session.overload_reported_at < 1):
        return
    log.warning(
        "acquisition %s: queue full, %d more frames recorded as missing (SUB cannot wait; "
        "use PULL, a larger queue_bytes or a faster disk)",
        session.acquisition,
        session.unreported_overload,
    )
    session.unreported_overload = 0
    session.overload_reported_at = now
