"""The control endpoint: answers REQ clients' ping/status requests, and its client."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Self

import msgpack
import zmq
from pydantic import ValidationError
from zmq.utils.monitor import recv_monitor_message

from ..core import (
    AcquisitionEntry,
    AcquisitionState,
    DaemonStatus,
    FramesinkError,
    Rejection,
    __version__,
)
from ._curve import (
    HANDSHAKE_FAILURES,
    HANDSHAKE_REFUSED,
    Certificate,
    ClientKeys,
    RefusalHandler,
    secure_server,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 << 10
POLL_MS = 200
StatusProvider = Callable[[], DaemonStatus]
CommandHandler = Callable[[Mapping[str, Any], str | None], dict[str, Any]]
"""Answers one control command: the request and the sender's CURVE key (or None)."""


class ControlError(FramesinkError, RuntimeError):
    """The control endpoint did not answer, or answered with an error."""


def answer(
    request_bytes: bytes,
    status: StatusProvider,
    commands: Mapping[str, CommandHandler] | None = None,
    sender: str | None = None,
) -> dict[str, Any]:
    """The reply to one raw request; never raises."""
    try:
        request = msgpack.unpackb(request_bytes, raw=False, max_ext_len=0, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        return {"ok": False, "error": f"request is not msgpack: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a msgpack map like {'cmd': 'status'}"}
    command = request.get("cmd")
    if command == "status" and "acquisition" in request and commands and "status" in commands:
        return commands["status"](request, sender)
    if command == "ping":
        return {"ok": True, "version": __version__}
    if command == "status":
        try:
            return status().model_dump(mode="json")
        except Exception as exc:
            log.exception("status failed")
            return {"ok": False, "error": f"status failed: {exc}"}
    handler = (commands or {}).get(command) if isinstance(command, str) else None
    if handler is None or command == "status":
        known = ", ".join(dict.fromkeys(["ping", "status", *(commands or {})]))
        return {"ok": False, "error": f"unknown cmd {command!r}; known: {known}"}
    try:
        return handler(request, sender)
    except Exception as exc:
        log.exception("control command %s failed", command)
        return {"ok": False, "error": f"{command} failed: {exc}"}


class ControlServer:
    """Serves the control endpoint from its own thread until ``stop``.

    A ROUTER socket answers REQ clients like REP would, but has no send/receive state
    machine to get stuck in: a client that vanishes before its reply cannot wedge it.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        status: StatusProvider,
        *,
        certificate: Certificate | None = None,
        on_refused: RefusalHandler | None = None,
        commands: Mapping[str, CommandHandler] | None = None,
    ) -> None:
        self._commands = dict(commands or {})
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        if certificate is not None:
            secure_server(self._socket, certificate)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError:
            self._socket.close(linger=0)
            raise
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._monitor = self._socket.get_monitor_socket(HANDSHAKE_FAILURES)
        self._status = status
        self._on_refused = on_refused
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (also when it never started serving)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        elif not self._socket.closed:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=0)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(POLL_MS))
                if self._monitor in events:
                    self._handshake_failed(recv_monitor_message(self._monitor))
                if self._socket in events:
                    self._reply(self._socket.recv_multipart(copy=False))
        finally:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=0)

    def _handshake_failed(self, event: dict[str, Any]) -> None:
        if self._on_refused is not None:
            endpoint = event["endpoint"].decode(errors="replace")
            self._on_refused(endpoint, HANDSHAKE_REFUSED)

    def _reply(self, frames: list[zmq.Frame]) -> None:
        """Answer one routed request: [peer identity..., b"", request]."""
        parts = [frame.bytes for frame in frames]
        if b"" not in parts:
            log.debug("control: ignored a message without a REQ envelope")
            return
        split = parts.index(b"")
        envelope, body = parts[:split], parts[split + 1 :]
        if len(body) == 1:
            reply = answer(body[0], self._status, self._commands, _sender(frames[-1]))
        else:
            reply = {"ok": False, "error": "request must be a single-part message"}
        try:
            self._socket.send_multipart(
                [*envelope, b"", msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:
            log.warning("control: could not reply (client gone?): %s", exc)


class ControlClient:
    """Asks a daemon's control endpoint; every call has a timeout.

    One connection serves every request (a new connection per request costs the daemon
    about 0.6 ms of CPU: a poller asking 50 times a second would cost it 3 %). A request
    that times out drops the connection; the next one opens a new one. Thread-safe.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 5.0,
        context: zmq.Context[Any] | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.keys = keys
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = None
        self._owner_pid = 0
        self._lock = threading.Lock()

    def request(self, command: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return the raw reply map; ControlError on timeout."""
        seconds = self.timeout if timeout is None else timeout
        with self._lock:
            sock = self._connected(seconds)
            try:
                sock.send(msgpack.packb(dict(command), use_bin_type=True))
                reply = msgpack.unpackb(sock.recv(), raw=False)
            except zmq.Again:
                self._drop()  # a REQ socket without its reply cannot send again
                raise ControlError(f"no answer from {self.endpoint} within {seconds:g} s") from None
            except BaseException:
                self._drop()
                raise
        if not isinstance(reply, dict):
            raise ControlError(f"unexpected reply from {self.endpoint}: {reply!r}")
        return reply

    def close(self) -> None:
        """Close the connection (idempotent; a later request opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_socket", None) is not None and self._owner_pid == os.getpid():
            self._drop()

    def _connected(self, seconds: float) -> zmq.Socket[bytes]:
        if self._socket is not None and self._owner_pid != os.getpid():
            self._socket = None  # inherited through fork: the parent's, not ours to use
        if self._socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            if self.keys is not None:
                self.keys.apply(sock)
            sock.connect(self.endpoint)
            self._socket, self._owner_pid = sock, os.getpid()
        self._socket.setsockopt(zmq.SNDTIMEO, int(seconds * 1000))
        self._socket.setsockopt(zmq.RCVTIMEO, int(seconds * 1000))
        return self._socket

    def _drop(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def ping(self, timeout: float | None = None) -> str:
        """The daemon's version, once it answers."""
        reply = self.request({"cmd": "ping"}, timeout)
        if not reply.get("ok"):
            raise ControlError(f"ping refused by {self.endpoint}: {reply.get('error')}")
        return str(reply.get("version"))

    def status(self, timeout: float | None = None) -> DaemonStatus:
        return parse_status(self.request({"cmd": "status"}, timeout), self.endpoint)

    def acquisition(self, name: str, timeout: float | None = None) -> AcquisitionEntry | None:
        """The daemon's newest entry for ``name`` (open, finished, failed, or refused with
        its reason), or None when it knows no recent acquisition of that id."""
        reply = self.request({"cmd": "status", "acquisition": name}, timeout)
        if not reply.get("ok"):
            return None
        try:
            return AcquisitionEntry.model_validate(reply.get("acquisition"))
        except ValidationError as exc:
            raise ControlError(f"malformed entry from {self.endpoint}: {exc}") from None

    def end(self, acquisition: str, how: str, timeout: float | None = None) -> None:
        """Stop or abort (``how``) an open acquisition; ControlError with the reason."""
        reply = self.request({"cmd": how, "acquisition": acquisition}, timeout)
        if not reply.get("ok"):
            raise ControlError(f"{how} {acquisition!r} refused: {reply.get('error')}")

    def wait_for_status(
        self, predicate: Callable[[DaemonStatus], bool], timeout: float, interval: float = 0.05
    ) -> DaemonStatus:
        """Poll the status until ``predicate`` holds; ControlError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControlError(f"the daemon's status did not come true within {timeout:g} s")
            status = self.status(timeout=min(self.timeout, remaining))
            if predicate(status):
                return status
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def known_entries(self, names: Collection[str]) -> dict[str, str]:
        """When each of ``names`` started, as far as the daemon knows it now (refused
        starts included): taken before a start, so that only a newer entry confirms it."""
        known = {}
        for name in names:
            entry = self.acquisition(name)
            if entry is not None:
                known[name] = entry.started
        return known

    def confirm_started(
        self,
        names: Collection[str],
        before: DaemonStatus,
        timeout: float,
        known: Mapping[str, str] | None = None,
    ) -> None:
        """Wait until the daemon shows every acquisition in ``names`` started after the
        status ``before`` and the entries ``known`` then (see :meth:`known_entries`):
        an entry of an earlier run of the same id does not count. ControlError naming
        the reason if it refused one."""
        earlier = {(entry.acquisition, entry.started) for entry in before.acquisitions}
        earlier |= set((known or {}).items())
        deadline = time.monotonic() + timeout
        waiting = set(names)
        while waiting:
            for name in sorted(waiting):
                entry = self.acquisition(name, timeout=max(0.1, deadline - time.monotonic()))
                if entry is None or (name, entry.started) in earlier:
                    continue
                if entry.state is AcquisitionState.REFUSED:
                    raise ControlError(
                        f"framesink refused acquisition {name!r}: {entry.refusal}: {entry.error}"
                    )
                waiting.discard(name)
            if not waiting:
                return
            for error in self._refusals_since(before, waiting):
                raise ControlError(
                    f"framesink refused acquisition {error.acquisition!r}: "
                    f"{error.reason}: {error.detail}"
                )
            if time.monotonic() >= deadline:
                raise ControlError(
                    f"the daemon did not show {', '.join(sorted(waiting))} within {timeout:g} s"
                )
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _refusals_since(self, before: DaemonStatus, names: Collection[str]) -> list[Rejection]:
        """Rejections naming ``names`` since ``before`` (a second start of an open id)."""
        return [
            error
            for error in self.status().recent_errors
            if error.acquisition in names and error not in before.recent_errors
        ]

    def wait_for_acquisition(self, acquisition: str, timeout: float) -> AcquisitionEntry:
        """Wait until the daemon reports ``acquisition`` finished or failed; return its entry.

        This is the end-to-end acknowledgement ZeroMQ does not give: once it returns,
        every message of the acquisition reached the daemon and its files are final.
        ControlError says what happened otherwise: the start was refused (and why), the
        daemon stopped answering, or the acquisition is still open (with the time waited).
        """
        began = time.monotonic()
        deadline = began + timeout
        entry: AcquisitionEntry | None = None
        silent_since: float | None = None
        while True:
            try:
                remaining = max(0.1, deadline - time.monotonic())
                entry = self.acquisition(acquisition, timeout=min(self.timeout, remaining))
                silent_since = None
            except ControlError:
                silent_since = silent_since or time.monotonic()
            if entry is not None and entry.state is AcquisitionState.REFUSED:
                raise ControlError(
                    f"framesink refused acquisition {acquisition!r} at its start: "
                    f"{entry.refusal}: {entry.error}"
                )
            if entry is not None and entry.state is not AcquisitionState.OPEN:
                return entry
            now = time.monotonic()
            if now >= deadline:
                raise ControlError(_not_finished(acquisition, entry, silent_since, began, now))
            time.sleep(min(0.05, deadline - now))


def _sender(frame: zmq.Frame) -> str | None:
    """The authenticated CURVE key of a request (None without CURVE)."""
    try:
        key = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return key if isinstance(key, str) and key else None


def _not_finished(
    acquisition: str,
    entry: AcquisitionEntry | None,
    silent_since: float | None,
    began: float,
    now: float,
) -> str:
    """Why waiting for ``acquisition`` ended without its final entry."""
    waited = f"after {now - began:.1f} s"
    if silent_since is not None:
        return (
            f"the daemon stopped answering {now - silent_since:.1f} s ago ({waited}): is it "
            f"running, and with CURVE, are the keys right? {acquisition!r} is not known to be final"
        )
    if entry is None:
        return f"the daemon does not know acquisition {acquisition!r} ({waited}): was it started?"
    return (
        f"acquisition {acquisition!r} is still open {waited} "
        f"({entry.frames_written} frames written)"
    )


def parse_status(reply: Mapping[str, Any], endpoint: str) -> DaemonStatus:
    """The typed status from a raw reply; ControlError when it is an error or malformed."""
    if not reply.get("ok"):
        raise ControlError(f"{endpoint} refused the status request: {reply.get('error')}")
    try:
        return DaemonStatus.model_validate(reply)
    except ValidationError as exc:
        raise ControlError(f"{endpoint} sent a status this client cannot read: {exc}") from None
