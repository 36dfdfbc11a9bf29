"""The control endpoint: a REP socket answering ping/status, and its client."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from ._version import __version__

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 << 10
POLL_MS = 200
StatusProvider = Callable[[], dict[str, Any]]


class ControlError(RuntimeError):
    """The control endpoint did not answer, or answered with an error."""


def answer(request_bytes: bytes, status: StatusProvider) -> dict[str, Any]:
    """The reply to one raw request; never raises."""
    try:
        request = msgpack.unpackb(request_bytes, raw=False, max_ext_len=0, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        return {"ok": False, "error": f"request is not msgpack: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a msgpack map like {'cmd': 'status'}"}
    command = request.get("cmd")
    if command == "ping":
        return {"ok": True, "version": __version__}
    if command == "status":
        try:
            return {"ok": True, "version": __version__, **status()}
        except Exception as exc:
            log.exception("status failed")
            return {"ok": False, "error": f"status failed: {exc}"}
    return {"ok": False, "error": f"unknown cmd {command!r}; known: ping, status"}


class ControlServer:
    """Serves the control endpoint from its own thread until ``stop``."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, status: StatusProvider) -> None:
        self._socket = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self._socket.setsockopt(zmq.SNDTIMEO, 1000)
        self._socket.bind(endpoint)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._status = status
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self._socket.poll(POLL_MS, zmq.POLLIN):
                    continue
                parts = self._socket.recv_multipart()
                if len(parts) == 1:
                    reply = answer(parts[0], self._status)
                else:
                    reply = {"ok": False, "error": "request must be a single-part message"}
                try:
                    self._socket.send(msgpack.packb(reply, use_bin_type=True))
                except zmq.Again:
                    log.warning("control client went away before its reply")
        finally:
            self._socket.close(linger=0)


def request(endpoint: str, command: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one control request and return the reply map; raise ControlError on timeout."""
    context: zmq.Context[Any] = zmq.Context.instance()
    with context.socket(zmq.REQ) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        sock.connect(endpoint)
        try:
            sock.send(msgpack.packb(command, use_bin_type=True))
            reply = msgpack.unpackb(sock.recv(), raw=False)
        except zmq.Again:
            raise ControlError(f"no answer from {endpoint} within {timeout:g} s") from None
    if not isinstance(reply, dict):
        raise ControlError(f"unexpected reply from {endpoint}: {reply!r}")
    return reply


def wait_for_acquisition(
    endpoint: str, acquisition: str, timeout: float, interval: float = 0.05
) -> dict[str, Any]:
    """Wait until the daemon reports ``acquisition`` finished or failed; return its entry.

    This is the end-to-end acknowledgement ZeroMQ does not give: once it returns, every
    message of the acquisition reached the daemon and its files are final.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ControlError(f"acquisition {acquisition!r} did not finish within {timeout:g} s")
        status = request(endpoint, {"cmd": "status"}, timeout=min(5.0, remaining))
        for entry in status.get("acquisitions", []):
            if entry.get("acquisition") == acquisition and entry.get("state") != "open":
                return dict(entry)
        time.sleep(interval)
