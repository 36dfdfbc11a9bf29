"""Prometheus metrics: the daemon's status, as dashboards read it.

Every scrape reads the same typed status that ``framesink status`` shows, so the two
always agree. Labels are bounded: no label per acquisition, one per rejection reason.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core import REJECTION_REASONS, AcquisitionState, Counter, DaemonStatus, FramesinkError
from ._page import LatestLookup, LivePage

log = logging.getLogger(__name__)

PREFIX = "framesink"
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COUNTER_HELP = {
    Counter.MESSAGES: "Messages received.",
    Counter.BAD_MESSAGES: "Messages rejected as breaking the protocol.",
    Counter.ORPHAN_MESSAGES: "Messages for an acquisition that was never started.",
    Counter.LATE_MESSAGES: "Messages for an acquisition that already ended.",
    Counter.DUPLICATE_STARTS: "Starts for an id that is open.",
    Counter.SEQ_GAPS: "Messages that never arrived (gaps in seq).",
    Counter.PEER_DISCONNECTS: "Publisher connections that went away.",
    Counter.RINGS_REFUSED: "Shared-memory rings refused or ended for breaking the rules.",
    Counter.AUTH_FAILURES: "RefusalError CURVE handshakes.",
    Counter.FRAMES_RECEIVED: "Frames in accepted frames messages.",
    Counter.FRAMES_WRITTEN: "Frames written to files.",
    Counter.FRAMES_MISSING: "Frames recorded missing (zero-filled).",
    Counter.FRAMES_DROPPED: "Frames received but not written (late, duplicate, beyond shape).",
    Counter.FRAMES_LOST_OVERLOAD: "Frames a SUB daemon could not queue.",
    Counter.BYTES_WRITTEN: "Pixel bytes written.",
    Counter.ACQUISITIONS_STARTED: "Acquisitions opened.",
    Counter.ACQUISITIONS_FINISHED: "Acquisitions finalized without error.",
    Counter.ACQUISITIONS_FAILED: "Acquisitions finalized with an error.",
    Counter.ACQUISITIONS_REJECTED: "Starts refused.",
}


class MetricsAddressError(FramesinkError, ValueError):
    """The ``metrics`` setting is not HOST:PORT."""


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as (host, port)."""
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise MetricsAddressError(
            f"metrics must be HOST:PORT, e.g. 127.0.0.1:9464; got {address!r}"
        )
    return host.strip("[]"), int(port)


class _StatusCollector(Collector):
    def __init__(self, status: Callable[[], DaemonStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        counters = status.counters
        for counter in Counter:
            yield CounterMetricFamily(
                f"{PREFIX}_{counter.value}", COUNTER_HELP[counter], value=counters.value(counter)
            )
        rejected = CounterMetricFamily(
            f"{PREFIX}_rejected_messages", "Messages not applied, by reason.", labels=["reason"]
        )
        by_reason = dict.fromkeys(REJECTION_REASONS, 0) | counters.rejected_by_reason
        for reason, count in sorted(by_reason.items()):
            rejected.add_metric([reason], count)
        yield rejected
        open_count = sum(a.state is AcquisitionState.OPEN for a in status.acquisitions)
        yield GaugeMetricFamily(
            f"{PREFIX}_open_acquisitions", "Acquisitions open now.", value=open_count
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queued_bytes", "Pixel bytes waiting for the disk.", value=status.queued_bytes
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_limit_bytes",
            "The bound on queued bytes.",
            value=status.queue_limit_bytes,
        )
        if status.free_bytes is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_free_bytes", "Free space on the data root.", value=status.free_bytes
            )
        yield GaugeMetricFamily(
            f"{PREFIX}_recovery_failures",
            "Folders recovery could not rebuild.",
            value=len(status.recovery_failures),
        )


class MetricsServer:
    """Serves ``/metrics``, the live page, ``/api/status`` and the thumbnails over HTTP
    from its own threads until ``stop``."""

    def __init__(
        self,
        address: str,
        status: Callable[[], DaemonStatus],
        latest: LatestLookup = lambda _name: None,
        *,
        show_names: bool = True,
    ) -> None:
        self.host, self.port = parse_address(address)
        self._status = status
        self._latest = latest
        self._show_names = show_names
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatusCollector(status))
        self.write_seconds = Histogram(
            f"{PREFIX}_write_seconds",
            "Time one batch of frames took to write to its file.",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        page = LivePage(
            self._status, self._latest, make_wsgi_app(self.registry), show_names=self._show_names
        )
        _Server.address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = make_server(
            self.host, self.port, page, server_class=_Server, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http", kwargs={"poll_interval": 0.5}
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("metrics on %s", self.url)

    def observe_write(self, seconds: float) -> None:
        self.write_seconds.observe(seconds)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow browser never holds up a Prometheus scrape."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """Requests are not logged (a page polling every second would fill the log)."""

    def log_message(self, format: str, *args: Any) -> None:
        return
