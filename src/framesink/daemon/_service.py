"""The daemon: receive loop, writer sessions, control endpoint, signals and shutdown.

Signals are handled in one place (``run``), which always tears down in ``finally``:
stop receiving, drain what already arrived, finalize every open acquisition, exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
import weakref
from collections import deque
from types import FrameType
from typing import Any, assert_never

import numpy as np
import zmq

from ..core import (
    AcquisitionEntry,
    AcquisitionState,
    Action,
    ByteBudget,
    Counter,
    DaemonStatus,
    Drop,
    Finish,
    FinishReason,
    Open,
    Router,
    RunState,
    SeqGap,
    SinkFactory,
    SinkSpec,
    Skip,
    WireError,
    Write,
    __version__,
    decode,
)
from ..tiff import PathError, RecoveryError, TiffSink, recover, resolve_output_folder
from ..transport import ControlServer, IngestSource, sd_notify
from ._counters import Counters
from ._session import Session
from ._settings import Settings

log = logging.getLogger(__name__)

RECEIVE_BATCH = 256
HOUSEKEEPING_S = 1.0
DRAIN_S = 2.0
JOIN_S = 600.0
RECENT_FINISHED = 50
BUDGET_WAIT_S = 0.5


class Daemon:
    """Subscribes to the ingest endpoints and writes every acquisition it is sent.

    ``sink_factory`` makes the storage of each acquisition (an OME-TIFF by default).
    """

    def __init__(self, settings: Settings, *, sink_factory: SinkFactory = TiffSink) -> None:
        self.settings = settings
        self._sink_factory = sink_factory
        self.state = RunState.STARTING
        self.counters = Counters()
        self.router = Router(
            idle_timeout=settings.idle_timeout,
            max_open=settings.max_open,
            max_gap_bytes=int(settings.max_gap_bytes),
        )
        self.budget = ByteBudget(int(settings.queue_bytes))
        self.sessions: dict[str, Session] = {}
        self.recent: deque[AcquisitionEntry] = deque(maxlen=RECENT_FINISHED)
        self.control_endpoint: str | None = None
        self.ingest_endpoints: list[str] = []
        self.free_bytes: int | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stop_requested = threading.Event()
        self._context: zmq.Context[Any] = zmq.Context()
        self._source: IngestSource | None = None
        self._recovery: threading.Thread | None = None
        self._control: ControlServer | None = None
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        os.set_blocking(self._wakeup_read, False)
        # Open for as long as this object lives: request_stop may come after run() ended.
        weakref.finalize(self, _close_all, self._wakeup_read, self._wakeup_write)

    # -- lifecycle -------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or ``request_stop``; always drains and finalizes."""
        previous = self._install_signal_handlers()
        try:
            self._start()
            self.state = RunState.RUNNING
            sd_notify("READY=1\nSTATUS=receiving")
            self._start_recovery()
            log.info(
                "framesink %s ready: ingest %s, control %s",
                __version__,
                ", ".join(self.ingest_endpoints),
                self.control_endpoint,
            )
            self._loop()
        finally:
            self._shutdown()
            self._restore_signal_handlers(previous)

    def request_stop(self) -> None:
        """Ask the loop to stop (thread- and signal-safe)."""
        self._stop_requested.set()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wakeup_write, b"\0")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for number in (signal.SIGTERM, signal.SIGINT):
            previous[number] = signal.signal(number, self._on_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        log.info("received %s: draining and finalizing", signal.Signals(number).name)
        self.request_stop()

    def _start(self) -> None:
        settings = self.settings
        settings.data_root.mkdir(parents=True, exist_ok=True)
        self._control = ControlServer(self._context, settings.control, self.status)
        self.control_endpoint = self._control.endpoint
        self._source = IngestSource(
            self._context,
            kind=settings.socket,
            bind=settings.bind,
            connect=settings.connect,
            subscribe=settings.subscribe,
            receive_hwm=settings.receive_hwm,
            max_message_bytes=int(settings.max_message_bytes),
        )
        self.ingest_endpoints = self._source.endpoints
        self._control.start()
        self._check_disk()

    def _start_recovery(self) -> None:
        """Recover interrupted acquisitions beside normal work (live ones hold their lock)."""
        if not self.settings.recover_on_start:
            return
        self._recovery = threading.Thread(target=self._recover, name="recovery", daemon=True)
        self._recovery.start()

    def _recover(self) -> None:
        try:
            for record in recover(self.settings.data_root):
                log.warning(
                    "recovered interrupted acquisition %s (%d frames)",
                    record.acquisition,
                    record.frames_written,
                )
        except RecoveryError as exc:
            log.error("some interrupted acquisitions could not be recovered: %s", exc)

    def _shutdown(self) -> None:
        self.state = RunState.DRAINING
        sd_notify("STOPPING=1")
        try:
            if self._source is not None:
                self._drain_socket()
                self._source.close()
            with self._lock:
                for action in self.router.finish_all(FinishReason.SHUTDOWN):
                    self._dispatch(action)
            self._join_sessions()
        finally:
            if self._control is not None:
                self._control.stop()
            self._context.term()
            self.state = RunState.STOPPED
            log.info("framesink stopped")

    def _drain_socket(self) -> None:
        """Take in what already arrived (bounded in time) so it is written too."""
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and self._receive_batch():
            continue

    def _join_sessions(self) -> None:
        deadline = time.monotonic() + JOIN_S
        for session in list(self.sessions.values()):
            if not session.join(max(0.0, deadline - time.monotonic())):
                log.error("acquisition %s did not finish writing in time", session.acquisition)
        with self._lock:
            self._reap()

    # -- the receive loop --------------------------------------------------------------
    def _loop(self) -> None:
        assert self._source is not None
        poller = zmq.Poller()
        poller.register(self._source.socket, zmq.POLLIN)
        poller.register(self._source.monitor, zmq.POLLIN)
        poller.register(self._wakeup_read, zmq.POLLIN)
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        while not self._stop_requested.is_set():
            timeout = self._poll_timeout(next_housekeeping)
            events = dict(poller.poll(int(timeout * 1000)))
            if self._wakeup_read in events:
                self._clear_wakeup()
            if self._source.socket in events:
                self._receive_batch()
            if self._source.monitor in events:
                self._peer_events()
            now = time.monotonic()
            with self._lock:
                for action in self.router.expire(now):
                    self._dispatch(action)
            if now >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = now + HOUSEKEEPING_S

    def _poll_timeout(self, next_housekeeping: float) -> float:
        deadline = self.router.next_deadline()
        due = next_housekeeping if deadline is None else min(deadline, next_housekeeping)
        return max(0.0, due - time.monotonic())

    def _clear_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup_read, 512):
                continue

    def _receive_batch(self) -> int:
        """Receive up to RECEIVE_BATCH waiting messages; return how many."""
        assert self._source is not None
        received = 0
        for parts in self._source.receive(RECEIVE_BATCH):
            received += 1
            self._handle(parts)
        return received

    def _peer_events(self) -> None:
        """Log publisher disconnects: ZeroMQ also drops a peer that sent an oversize message."""
        assert self._source is not None
        for endpoint in self._source.disconnects():
            with self._lock:
                self.counters.add(Counter.PEER_DISCONNECTS)
            log.info(
                "publisher %s disconnected; if it did not close its socket, it may have sent a "
                "message larger than max_message_bytes (%d), which ZeroMQ drops together with "
                "the connection",
                endpoint,
                int(self.settings.max_message_bytes),
            )

    def _handle(self, parts: list[memoryview]) -> None:
        with self._lock:
            self.counters.add(Counter.MESSAGES)
            try:
                message = decode(parts, int(self.settings.max_header_bytes))
                for action in self.router.route(message, time.monotonic()):
                    self._dispatch(action)
            except WireError as exc:
                self.counters.reject(exc)
            except Exception as exc:  # a bug hit by one message must not take the daemon down
                log.exception("internal error while handling a message; it is rejected")
                self.counters.reject(WireError("internal_error", f"{type(exc).__name__}: {exc}"))

    # -- actions -----------------------------------------------------------------------
    def _dispatch(self, action: Action) -> None:
        match action:
            case Open():
                self._open(action)
            case SeqGap(acquisition, missed):
                self.counters.add(Counter.SEQ_GAPS, missed)
                log.warning(
                    "acquisition %s: %d messages never arrived (seq gap)", acquisition, missed
                )
            case Write() | Skip() | Drop() | Finish():
                self._to_session(action)
            case _:
                assert_never(action)

    def _to_session(self, action: Write | Skip | Drop | Finish) -> None:
        session = self.sessions.get(action.acquisition)
        if session is None:
            return
        if session.failed:
            self._retire_failed(session)
            return
        match action:
            case Write():
                self._write(session, action)
            case Skip(_, _, count):
                session.skip(count)
            case Drop(_, count):
                self.counters.add(Counter.FRAMES_DROPPED, count)
                session.drop(count)
            case Finish(_, reason, metadata, error):
                session.finish(reason, metadata, error)
            case _:
                assert_never(action)

    def _open(self, action: Open) -> None:
        start = action.start
        try:
            self._refuse_when_disk_low()
            folder = resolve_output_folder(
                self.settings.data_root,
                start.output.output_path,
                start.output.output_name,
                self.settings.on_exists,
            )
            spec = SinkSpec(
                acquisition=action.acquisition,
                folder=folder,
                name=start.output.output_name,
                metadata=start.metadata,
                layout=action.layout,
                fsync_interval=self.settings.fsync_interval or None,
                direct_io=self.settings.direct_io,
            )
            sink = self._sink_factory(spec)
            sink.prepare()
        except (PathError, OSError, ValueError) as exc:
            self.router.fail(action.acquisition)
            self.counters.add(Counter.ACQUISITIONS_REJECTED)
            self.counters.reject(WireError("bad_output", str(exc), action.acquisition))
            return
        except Exception:
            self.router.fail(action.acquisition)
            raise
        session = Session(action.acquisition, action.layout, sink, self.budget)
        self.sessions[action.acquisition] = session
        self.counters.add(Counter.ACQUISITIONS_STARTED)
        log.info("acquisition %s started -> %s", action.acquisition, sink.progress().path)

    def _write(self, session: Session, action: Write) -> None:
        layout = session.layout
        frames = np.frombuffer(action.payload, dtype=layout.dtype).reshape(
            action.count, *layout.frame_shape
        )
        self.counters.add(Counter.FRAMES_RECEIVED, action.count)
        if session.failed:
            session.frames_lost += action.count
            return
        if not self._take_budget(session, frames.nbytes):
            self.counters.add(Counter.FRAMES_LOST_OVERLOAD, action.count)
            session.skip(action.count)
            session.unreported_overload += action.count
            self._report_overload(session)
            return
        session.write(frames, action.frame_metadata, frames.nbytes)

    @staticmethod
    def _report_overload(session: Session, force: bool = False) -> None:
        """Warn about frames lost to a full queue, at most once a second per acquisition."""
        now = time.monotonic()
        if not session.unreported_overload or (
            not force and now - session.overload_reported_at < 1
        ):
            return
        log.warning(
            "acquisition %s: queue full, %d more frames recorded as missing (SUB cannot wait; "
            "use PULL, a larger queue_bytes or a faster disk)",
            session.acquisition,
            session.unreported_overload,
        )
        session.unreported_overload = 0
        session.overload_reported_at = now

    def _retire_failed(self, session: Session) -> None:
        """A session whose writer failed: later messages for it count as late."""
        self.router.fail(session.acquisition)
        session.finish(FinishReason.ERROR, error=session.error)

    def _take_budget(self, session: Session, nbytes: int) -> bool:
        """Reserve queue space: PULL waits for it (backpressure), SUB never waits."""
        if self.settings.socket == "sub":
            return self.budget.acquire(nbytes, timeout=0)
        if self.budget.acquire(nbytes, timeout=0):
            return True
        started = time.monotonic()
        self._lock.release()
        try:
            while not self.budget.acquire(nbytes, timeout=BUDGET_WAIT_S):
                if session.done:
                    return False
            return True
        finally:
            self._lock.acquire()
            # Messages waited in ZeroMQ meanwhile: that time is not idleness.
            self.router.extend_deadlines(time.monotonic() - started)

    # -- housekeeping and status -------------------------------------------------------
    def _housekeeping(self) -> None:
        self._check_disk()
        with self._lock:
            self._reap()

    def _reap(self) -> None:
        for name, session in list(self.sessions.items()):
            self._report_overload(session, force=True)
            if session.failed:
                self._retire_failed(session)
            if not session.done:
                continue
            del self.sessions[name]
            entry = session.entry()
            self.recent.appendleft(entry)
            self.counters.add(Counter.FRAMES_WRITTEN, entry.frames_written)
            self.counters.add(Counter.BYTES_WRITTEN, entry.bytes_written)
            if entry.state is AcquisitionState.FAILED:
                self.counters.add(Counter.ACQUISITIONS_FAILED)
                self.router.fail(name)
            else:
                self.counters.add(Counter.ACQUISITIONS_FINISHED)

    def _check_disk(self) -> None:
        try:
            self.free_bytes = shutil.disk_usage(self.settings.data_root).free
        except OSError as exc:
            log.error("cannot read free space of %s: %s", self.settings.data_root, exc)
            return
        if self.free_bytes >= int(self.settings.min_free_bytes):
            return
        with self._lock:
            actions = self.router.fail_all(f"disk almost full: {self.free_bytes} bytes free")
            if actions:
                log.error(
                    "only %d bytes free on %s: finalizing %d open acquisitions",
                    self.free_bytes,
                    self.settings.data_root,
                    len(actions),
                )
            for action in actions:
                self._dispatch(action)

    def _refuse_when_disk_low(self) -> None:
        if self.free_bytes is not None and self.free_bytes < int(self.settings.min_free_bytes):
            raise OSError(
                f"only {self.free_bytes} bytes free on the data root (minimum "
                f"{int(self.settings.min_free_bytes)}); acquisition refused"
            )

    def status(self) -> DaemonStatus:
        """Status for the control endpoint (called from the control thread)."""
        with self._lock:
            by_acquisition = self.counters.rejections_by_acquisition
            live = [
                session.entry(by_acquisition.get(session.acquisition, 0))
                for session in self.sessions.values()
            ]
            recent = [
                entry.model_copy(
                    update={"rejected_messages": by_acquisition.get(entry.acquisition, 0)}
                )
                for entry in self.recent
            ]
            counters = self.counters.snapshot()
            counters.frames_written += sum(entry.frames_written for entry in live)
            counters.bytes_written += sum(entry.bytes_written for entry in live)
            return DaemonStatus(
                version=__version__,
                state=self.state,
                recovering=self._recovery is not None and self._recovery.is_alive(),
                uptime_s=round(time.monotonic() - self._started, 3),
                data_root=str(self.settings.data_root),
                free_bytes=self.free_bytes,
                socket=self.settings.socket,
                ingest=list(self.ingest_endpoints),
                queued_bytes=self.budget.used,
                queue_limit_bytes=self.budget.limit,
                counters=counters,
                acquisitions=[*live, *recent],
                recent_errors=list(self.counters.recent_errors)[-10:],
            )


def _close_all(*descriptors: int) -> None:
    for descriptor in descriptors:
        os.close(descriptor)
