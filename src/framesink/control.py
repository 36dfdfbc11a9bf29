"""The control endpoint: answers REQ clients' ping/status requests, and its client."""

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
    """Serves the control endpoint from its own thread until ``stop``.

    A ROUTER socket answers REQ clients like REP would, but has no send/receive state
    machine to get stuck in: a client that vanishes before its reply cannot wedge it.
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, status: StatusProvider) -> None:
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
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
                self._reply(self._socket.recv_multipart())
        finally:
            self._socket.close(linger=0)

    def _reply(self, parts: list[bytes]) -> None:
        """Answer one routed request: [peer identity..., b"", request]."""
        if b"" not in parts:
            log.debug("control: ignored a message without a REQ envelope")
            return
        split = parts.index(b"")
        envelope, body = parts[:split], parts[split + 1 :]
        if len(body) == 1:
            reply = answer(body[0], self._status)
        else:
            reply = {"ok": False, "error": "request must be a single-part message"}
        try:
            self._socket.send_multipart(
                [*envelope, b"", msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:
            log.warning("control: could not reply (client gone?): %s", exc)


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
