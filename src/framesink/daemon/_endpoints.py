"""The daemon's sockets: control, ingest, the shared-memory door and metrics.

Opened control first, so that a second daemon on the same control endpoint stops
before it touches anything else; a failure raises StartupError naming the endpoint and
the flag. Closed whatever happened, with the socket files of ``ipc://`` endpoints it
bound removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from ..transport import (
    Certificate,
    CommandHandler,
    ControlServer,
    IngestSource,
    RefusalHandler,
    RingServer,
    StatusProvider,
)
from ._metrics import MetricsServer
from ._ring_intake import open_ring_source
from ._settings import Settings, ring_limits
from ._startup import remove_ipc_files, starting


class Endpoints:
    """What the daemon listens on; ``None`` for what is not (yet) open."""

    def __init__(
        self,
        settings: Settings,
        context: zmq.Context[Any],
        metrics: MetricsServer | None,
    ) -> None:
        self.settings = settings
        self.context = context
        self.metrics = metrics
        self.control: ControlServer | None = None
        self.source: IngestSource | None = None
        self.ring_source: IngestSource | None = None
        """Headers of ring publishers, on their own socket: a deep queue costs no memory."""
        self.rings: RingServer | None = None

    @property
    def control_endpoint(self) -> str | None:
        return None if self.control is None else self.control.endpoint

    @property
    def ingest(self) -> list[str]:
        return [] if self.source is None else list(self.source.endpoints)

    def open(
        self,
        status: StatusProvider,
        certificate: Certificate | None,
        *,
        on_auth_refused: RefusalHandler,
        on_ring_refused: Callable[[str], None],
        wake: Callable[[], None],
        commands: Mapping[str, CommandHandler],
    ) -> None:
        """Bind everything (the control endpoint serves once :meth:`serve_control`)."""
        settings = self.settings
        with starting(f"cannot bind the control endpoint {settings.control}", "--control"):
            self.control = ControlServer(
                self.context,
                settings.control,
                status,
                certificate=certificate,
                on_refused=on_auth_refused,
                commands=commands,
            )
        if self.metrics is not None:
            with starting(f"cannot serve metrics on {settings.metrics}", "--metrics"):
                self.metrics.start()
        ingest = ", ".join([*settings.bind, *settings.connect])
        with starting(f"cannot open the ingest endpoints {ingest}", "--bind/--connect"):
            self.source = IngestSource(
                self.context,
                kind=settings.socket,
                bind=settings.bind,
                connect=settings.connect,
                subscribe=settings.subscribe,
                receive_hwm=settings.receive_hwm,
                max_message_bytes=int(settings.max_message_bytes),
                certificate=certificate,
            )
        if settings.shared_memory:
            self._open_rings(certificate, on_ring_refused, wake)

    def _open_rings(
        self,
        certificate: Certificate | None,
        on_refused: Callable[[str], None],
        wake: Callable[[], None],
    ) -> None:
        path = ring_socket_path(self.settings)
        with starting(f"cannot open the shared-memory socket {path}", "shared_memory_socket"):
            self.rings = RingServer(path, ring_limits(self.settings), on_refused, wake)
            self.ring_source = open_ring_source(self.context, path, self.settings, certificate)

    def serve_control(self) -> None:
        assert self.control is not None
        self.control.start()

    def sources(self) -> list[IngestSource]:
        return [s for s in (self.source, self.ring_source) if s is not None]

    def close_sources(self) -> None:
        for source in self.sources():
            source.close()

    def close(self) -> None:
        """Close every socket and server still open (each failure is its own)."""
        closers = [source.close for source in self.sources()]
        for opened in (self.rings, self.control, self.metrics):
            if opened is not None:
                closers.append(opened.close if isinstance(opened, RingServer) else opened.stop)
        for close in closers:
            with contextlib.suppress(Exception):
                close()

    def remove_socket_files(self) -> None:
        """After the context ended: the ipc files of the endpoints this daemon bound."""
        bound = [self.control_endpoint] if self.control_endpoint else []
        connected = set(self.settings.connect)
        bound += [endpoint for endpoint in self.ingest if endpoint not in connected]
        if self.ring_source is not None:
            bound += self.ring_source.endpoints
        remove_ipc_files(bound)


def ring_socket_path(settings: Settings) -> Path:
    """Where publishers register shared-memory rings."""
    if settings.shared_memory_socket is not None:
        return settings.shared_memory_socket
    folder = os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir()
    return Path(folder) / f"framesink-{os.getpid()}.rings"
