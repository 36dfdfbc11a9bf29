"""The ZeroMQ ingest source: one SUB or PULL socket on every configured endpoint."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ._curve import HANDSHAKE_FAILURES, Certificate, secure_server

_NOBLOCK = int(zmq.NOBLOCK)


@dataclass(frozen=True)
class Received:
    """One message as buffers, and the CURVE key of its sender (None without CURVE)."""

    parts: list[memoryview]
    sender: str | None


@dataclass
class PeerEvents:
    """What the socket monitor saw since the last look."""

    disconnects: list[str] = field(default_factory=list)
    handshake_failures: list[str] = field(default_factory=list)


class IngestSource:
    """Receives multipart messages zero-copy; reports publisher disconnects.

    libzmq drops a message larger than ``max_message_bytes`` together with the
    connection it came on, so disconnects are watched through a socket monitor.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        *,
        kind: str,
        bind: Sequence[str],
        connect: Sequence[str],
        subscribe: Sequence[str] = ("",),
        receive_hwm: int = 4,
        max_message_bytes: int = 1 << 31,
        certificate: Certificate | None = None,
    ) -> None:
        socket_type = zmq.SUB if kind == "sub" else zmq.PULL
        self.socket: zmq.Socket[Any] = context.socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, 0)
        if certificate is not None:
            secure_server(self.socket, certificate)
        self.socket.setsockopt(zmq.RCVHWM, receive_hwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.max_message_bytes = max_message_bytes
        if socket_type == zmq.SUB:
            for prefix in subscribe:
                self.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.endpoints: list[str] = []
        try:
            for endpoint in bind:
                self.socket.bind(endpoint)
                self.endpoints.append(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))
            for endpoint in connect:
                self.socket.connect(endpoint)
                self.endpoints.append(endpoint)
        except zmq.ZMQError:
            self.socket.close(linger=0)
            raise
        self.secured = certificate is not None
        self.monitor: zmq.Socket[Any] = self.socket.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILURES
        )

    def receive(self, limit: int) -> Iterator[Received]:
        """Yield up to ``limit`` waiting messages (as buffers) without blocking."""
        receive = self.socket.recv
        for _ in range(limit):
            try:
                first = receive(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            # Part by part (the rest of a message is there once its first part is):
            # half the cost of recv_multipart, which counts at camera message rates.
            parts, part = [first.buffer], first
            while part.more:
                part = receive(_NOBLOCK, copy=False)
                parts.append(part.buffer)
            sender = str(first.get("User-Id")) if self.secured else None
            yield Received(parts, sender)

    def peer_events(self) -> PeerEvents:
        """Disconnects and failed handshakes since the last call (endpoints)."""
        events = PeerEvents()
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            endpoint = event["endpoint"].decode(errors="replace")
            if event["event"] == zmq.EVENT_DISCONNECTED:
                events.disconnects.append(endpoint)
            else:
                events.handshake_failures.append(endpoint)
        return events

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)
