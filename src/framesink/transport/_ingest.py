"""The ZeroMQ ingest source: one SUB or PULL socket on every configured endpoint."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message


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
    ) -> None:
        socket_type = zmq.SUB if kind == "sub" else zmq.PULL
        self.socket: zmq.Socket[Any] = context.socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, receive_hwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
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
        self.monitor: zmq.Socket[Any] = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def receive(self, limit: int) -> Iterator[list[memoryview]]:
        """Yield up to ``limit`` waiting messages (as buffers) without blocking."""
        for _ in range(limit):
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            yield [part.buffer for part in parts]

    def disconnects(self) -> list[str]:
        """Endpoints of publishers that disconnected since the last call."""
        endpoints = []
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                endpoints.append(event["endpoint"].decode(errors="replace"))
        return endpoints

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)
