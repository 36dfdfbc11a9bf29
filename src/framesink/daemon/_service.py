"""The daemon: receive loop, control endpoint, signals, housekeeping and shutdown.

Signals are handled in one place (``run``), which always tears down in ``finally``:
stop receiving (after at most ``DRAIN_S`` seconds of taking in what already arrived),
write everything queued, finalize every open acquisition, exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from functools import partial
from typing import Any

import zmq

from ..core import (
    Counter,
    DaemonStatus,
    FinishReason,
    Router,
    RunState,
    SinkFactory,
    __version__,
)
from ..formats import open_sink, recover_each
from ..transport import (
    HANDSHAKE_REFUSED,
    IngestSource,
    sd_notify,
)
from ._commands import control_commands
from ._counters import Counters
from ._dispatch import RECEIVE_BATCH, Dispatcher, receive_batch
from ._endpoints import Endpoints
from ._metrics import MetricsServer
from ._recovering import BackgroundRecovery
from ._ring_intake import serve_ring_events
from ._security import Security
from ._settings import Settings
from ._signals import handled_signals
from ._startup import prepare_data_root

log = logging.getLogger(__name__)

"""Received messages are handled together up to this many bytes (see _receive_batch)."""
HOUSEKEEPING_S = 1.0
DRAIN_S = 2.0
JOIN_S = 600.0
STALL_S = 1.0
"""A loop turn this much longer than planned means the daemon itself did not run."""


class Daemon:
    """Subscribes to the ingest endpoints and writes every acquisition it is sent.

    ``sink_factory`` makes the storage of each acquisition (in the format its start names).
    A CURVE setup that cannot be used raises CurveError here, before anything binds.
    """

    def __init__(self, settings: Settings, *, sink_factory: SinkFactory = open_sink) -> None:
        self.settings = settings
        self.state = RunState.STARTING
        self.counters = Counters()
        self.dispatcher = Dispatcher(settings, self.counters, sink_factory)
        self._recovery = BackgroundRecovery(settings.data_root, recover_each)
        self._security = Security(settings)
        metrics = (
            MetricsServer(
                settings.metrics,
                self.status,
                self.dispatcher.sessions.latest_frame,
                show_names=settings.live_page_names or settings.curve_server_key is None,
            )
            if settings.metrics
            else None
        )
        self._reload_requested = threading.Event()
        self._started = time.monotonic()
        self._stop_requested = threading.Event()
        self._context: zmq.Context[Any] = zmq.Context()
        self.endpoints = Endpoints(settings, self._context, metrics)
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        os.set_blocking(self._wakeup_read, False)
        # Open for as long as this object lives: request_stop may come after run() ended.
        weakref.finalize(self, _close_all, self._wakeup_read, self._wakeup_write)

    # -- lifecycle -------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or ``request_stop``; always drains and finalizes."""
        with handled_signals(self.request_stop, self._request_reload):
            try:
                self._start()
            except BaseException:
                self._abandon_start()
                raise
            self._run()

    def _run(self) -> None:
        try:
            self.state = RunState.RUNNING
            sd_notify("READY=1\nSTATUS=receiving")
            if self.settings.recover_on_start:
                self._recovery.start()
            log.info(
                "framesink %s ready: ingest %s, control %s",
                __version__,
                ", ".join(self.endpoints.ingest),
                self.endpoints.control_endpoint,
            )
            self._loop()
        finally:
            self._shutdown()

    def request_stop(self) -> None:
        """Ask the loop to stop (thread- and signal-safe); intake ends DRAIN_S from now."""
        self.dispatcher.admission.close_intake(DRAIN_S)
        self._stop_requested.set()
        self._wake()

    def _wake(self) -> None:
        """Make the receive loop turn now (thread- and signal-safe)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wakeup_write, b"\0")

    def _reload(self) -> None:
        """Reread the allowed clients; what a removed key holds ends now."""
        if not self._security.reload():
            return
        allowed = self._security.allows
        error = "the client key that started it was removed from the allowed clients"
        ended = self.dispatcher.act(
            lambda router: router.fail_some(router.owned_by_others_than(allowed), error)
        )
        for action in ended:
            log.warning("acquisition %s ended: its client key was removed", action.acquisition)

    def _request_reload(self) -> None:
        """Reread the allowed CURVE clients at the next turn of the loop (signal-safe)."""
        self._reload_requested.set()
        self._wake()

    def _start(self) -> None:
        """Bind everything, control first; StartupError names what failed and the setting."""
        prepare_data_root(self.settings.data_root)
        self._security.start(self._context, self._auth_refused)
        if self._security.enabled:
            self.dispatcher.sender_allowed = self._security.allows
        endpoints = self.endpoints
        endpoints.open(
            self.status,
            self._security.certificate,
            on_auth_refused=self._auth_refused,
            on_ring_refused=self._ring_refused,
            wake=self._wake,
            commands=control_commands(self.dispatcher, self._security),
        )
        if endpoints.metrics is not None:
            self.dispatcher.write_timer = endpoints.metrics.observe_write
        self.dispatcher.rings.server = endpoints.rings
        endpoints.serve_control()
        self._check_disk()

    def _abandon_start(self) -> None:
        """Close what a failed start opened (nothing was received or written)."""
        self.endpoints.close()
        with contextlib.suppress(Exception):
            self._security.stop()
        self._context.destroy(linger=0)
        self.endpoints.remove_socket_files()
        self.state = RunState.STOPPED

    def _shutdown(self) -> None:
        self.state = RunState.DRAINING
        sd_notify("STOPPING=1")
        try:
            self._drain_socket()
            self.endpoints.close_sources()
            self.dispatcher.act(lambda router: router.finish_all(FinishReason.SHUTDOWN))
            self.dispatcher.join(JOIN_S)
        finally:
            with self.dispatcher.locked():
                self.counters.flush_suppressed(final=True)
            self.endpoints.close()
            self._security.stop()
            self._context.term()
            self.endpoints.remove_socket_files()
            self.state = RunState.STOPPED
            log.info("framesink stopped")

    def _drain_socket(self) -> None:
        """Take in what already arrived, for at most DRAIN_S seconds, so it is written too.

        The bound holds under backpressure as well: a message that still finds no queue
        space at the deadline has its frames recorded missing.
        """
        deadline = self.dispatcher.admission.close_intake(DRAIN_S)
        for source in self.endpoints.sources():
            while time.monotonic() < deadline and receive_batch(self.dispatcher, source, deadline):
                continue

    # -- the receive loop --------------------------------------------------------------
    def _loop(self) -> None:
        sources = self.endpoints.sources()
        poller = zmq.Poller()
        for source in sources:
            poller.register(source.socket, zmq.POLLIN)
            poller.register(source.monitor, zmq.POLLIN)
        poller.register(self._wakeup_read, zmq.POLLIN)
        rings = self.endpoints.rings
        watched: set[int] = set()
        cycle_started = time.monotonic()
        next_housekeeping = cycle_started + HOUSEKEEPING_S
        while not self._stop_requested.is_set():
            if rings is not None:
                watched = _watch(poller, watched, set(rings.watched_fds(time.monotonic())))
            timeout = self._poll_timeout(next_housekeeping)
            events = dict(poller.poll(int(timeout * 1000)))
            if self._wakeup_read in events:
                self._clear_wakeup()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._reload()
            drained = True
            for source in sources:
                if source.socket in events:
                    taken = receive_batch(
                        self.dispatcher, source, self.dispatcher.admission.intake_deadline
                    )
                    drained = drained and taken < RECEIVE_BATCH
                if source.monitor in events:
                    self._peer_events(source)
            if rings is not None:
                serve_ring_events(rings, events, watched)
                rings.flush()
            now = time.monotonic()
            # Cycle to cycle, so a stop anywhere in the loop (housekeeping too) is seen.
            stalled = self._pause_after_stall(now - cycle_started - timeout)
            cycle_started = now
            if drained and not stalled:
                # Messages still waiting in the socket are not idleness.
                self.dispatcher.act(partial(Router.expire, now=now))
            if now >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = now + HOUSEKEEPING_S

    def _pause_after_stall(self, overrun: float) -> bool:
        """If the daemon itself was not running (stopped, swapping, a suspended machine),
        pause every idle clock by that long; its publishers were not idle."""
        if overrun < STALL_S:
            return False
        log.warning(
            "the daemon did not run for %.1f s (stopped, swapping or suspended?); "
            "idle timeouts are extended by that much",
            overrun,
        )
        self.dispatcher.pause_clock(overrun)
        return True

    def _poll_timeout(self, next_housekeeping: float) -> float:
        deadline = self.dispatcher.router.next_deadline()
        due = next_housekeeping if deadline is None else min(deadline, next_housekeeping)
        return max(0.0, due - time.monotonic())

    def _clear_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup_read, 512):
                continue

    def _peer_events(self, source: IngestSource) -> None:
        """Log publisher disconnects: ZeroMQ also drops a peer that sent an oversize message."""
        events = source.peer_events()
        for endpoint in events.handshake_failures:
            if self._security.enabled:
                self._auth_refused(endpoint, HANDSHAKE_REFUSED)
            else:
                log.info(
                    "a peer on %s failed the ZeroMQ handshake: it uses CURVE and this daemon "
                    "does not, or its socket does not fit this daemon's %s (PUB for sub, "
                    "PUSH for pull)",
                    endpoint,
                    self.settings.socket.upper(),
                )
        refused = set(events.handshake_failures)
        for endpoint in events.disconnects:
            with self.dispatcher.locked():
                self.counters.peer_disconnected(
                    endpoint, source.max_message_bytes, quiet=endpoint in refused
                )

    def _ring_refused(self, why: str) -> None:
        """A shared-memory ring refused or ended for breaking the rules (receive loop)."""
        log.warning("%s", why)
        with self.dispatcher.locked():
            self.counters.add(Counter.RINGS_REFUSED)

    def _auth_refused(self, peer: str, what: str) -> None:
        """A refused handshake (from the ZAP, control or receive thread)."""
        with self.dispatcher.locked():
            self.counters.auth_refused(peer, what)

    # -- housekeeping and status -------------------------------------------------------
    def _housekeeping(self) -> None:
        self._check_disk()
        self.dispatcher.reap()
        with self.dispatcher.locked():
            self.counters.flush_suppressed()

    def _check_disk(self) -> None:
        disk = self.dispatcher.disk
        if not disk.measure():
            return
        error = f"disk almost full: {disk.free_bytes} bytes free"
        failed = len(self.dispatcher.act(lambda router: router.fail_all(error)))
        if failed:
            log.error(
                "only %d bytes free on %s: finalized %d open acquisitions",
                disk.free_bytes,
                self.settings.data_root,
                failed,
            )

    def status(self) -> DaemonStatus:
        """Status for the control endpoint (called from the control thread)."""
        dispatcher, endpoints = self.dispatcher, self.endpoints
        with dispatcher.locked():
            live, recent = dispatcher.entries()
            counters = self.counters.snapshot()
            counters.frames_written += sum(entry.frames_written for entry in live)
            counters.frames_missing += sum(entry.frames_missing for entry in live)
            counters.bytes_written += sum(entry.bytes_written for entry in live)
            return DaemonStatus(
                version=__version__,
                state=self.state,
                recovering=self._recovery.running,
                recovery_failures=self._recovery.failures,
                uptime_s=round(time.monotonic() - self._started, 3),
                data_root=str(self.settings.data_root),
                free_bytes=dispatcher.disk.free_bytes,
                socket=self.settings.socket,
                ingest=self.endpoints.ingest,
                queued_bytes=dispatcher.admission.budget.used,
                queue_limit_bytes=dispatcher.admission.budget.limit,
                metrics=None if endpoints.metrics is None else endpoints.metrics.url,
                shared_memory=None if endpoints.rings is None else str(endpoints.rings.path),
                shared_memory_ingest=(
                    None if endpoints.ring_source is None else endpoints.ring_source.endpoints[0]
                ),
                counters=counters,
                acquisitions=[*live, *recent],
                recent_errors=list(self.counters.recent_errors)[-10:],
            )


def _watch(poller: zmq.Poller, watched: set[int], wanted: set[int]) -> set[int]:
    """Keep the poller on exactly the ``wanted`` descriptors."""
    for fd in watched - wanted:
        poller.unregister(fd)
    for fd in wanted - watched:
        poller.register(fd, zmq.POLLIN)
    return wanted


def _close_all(*descriptors: int) -> None:
    for descriptor in descriptors:
        os.close(descriptor)
