"""The control client over real sockets: one connection for many requests, and a
request that timed out does not wedge the next."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from framesink.transport import ControlClient, ControlError


class Answerer(threading.Thread):
    """A ROUTER that answers pings, ignoring the requests it is told to; counts the
    connections it accepted."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, ignore: set[int]) -> None:
        super().__init__(daemon=True)
        self.router = context.socket(zmq.ROUTER)
        self.router.bind(endpoint)
        self.monitor = self.router.get_monitor_socket(zmq.EVENT_ACCEPTED)
        self.ignore = ignore
        self.requests = 0
        self.accepted = 0
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while not self.stopping.is_set():
            events = dict(poller.poll(50))
            if self.monitor in events:
                recv_monitor_message(self.monitor)
                self.accepted += 1
            if self.router in events:
                *envelope, _request = self.router.recv_multipart()
                self.requests += 1
                if self.requests not in self.ignore:
                    reply = {"ok": True, "version": str(self.requests)}
                    self.router.send_multipart([*envelope, msgpack.packb(reply)])
        while self.monitor.poll(100):  # connections accepted but not yet counted
            recv_monitor_message(self.monitor)
            self.accepted += 1
        self.router.disable_monitor()
        self.monitor.close(linger=0)
        self.router.close(linger=0)


@pytest.fixture
def answerer(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Answerer]:
    context: zmq.Context[Any] = zmq.Context()
    server = Answerer(context, f"ipc://{tmp_path}/control", set(getattr(request, "param", ())))
    server.start()
    yield server
    server.stop()
    context.term()


def test_one_connection_serves_every_request(answerer: Answerer, tmp_path: Path) -> None:
    with ControlClient(f"ipc://{tmp_path}/control", timeout=2.0) as client:
        versions = [client.ping() for _ in range(20)]
    assert versions == [str(number) for number in range(1, 21)]
    answerer.stop()
    assert answerer.accepted == 1


@pytest.mark.parametrize("answerer", [{2}], indirect=True)
def test_a_request_without_an_answer_does_not_wedge_the_next(
    answerer: Answerer, tmp_path: Path
) -> None:
    with ControlClient(f"ipc://{tmp_path}/control", timeout=2.0) as client:
        assert client.ping() == "1"
        with pytest.raises(ControlError, match="no answer"):
            client.ping(timeout=0.3)
        assert client.ping() == "3"
    answerer.stop()
    assert answerer.accepted == 2
