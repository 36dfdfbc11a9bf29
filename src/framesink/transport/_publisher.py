"""Publisher client: how control software, scripts and tests send acquisitions.

PUB mode uses an XPUB socket and waits until a subscriber's subscription has arrived
before the start message goes out, so the start is not lost to ZeroMQ's "slow joiner"
behaviour. PUSH mode blocks (with a timeout) when the daemon's queue is full, which is
the lossless choice when one daemon receives from the camera.

ZeroMQ has no delivery acknowledgement, and closing a socket while the daemon is behind
can drop the last queued messages. Give the daemon's control endpoint (``control=``)
and end with ``stop(wait=...)``: it returns once the daemon has finalized the files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
import zmq

from ..core import (
    AcquisitionEntry,
    DaemonStatus,
    FramesinkError,
    MetaData,
    end_header,
    frames_header,
    pack_header,
    start_header,
)
from ._control import ControlClient, ControlError
from ._curve import ClientKeys
from ._ring import RingError, SharedRing

_MORE = int(zmq.SNDMORE)


class PublishError(FramesinkError, RuntimeError):
    """A message could not be handed to ZeroMQ in time."""


class Publisher:
    """One ingest socket (PUB or PUSH) that acquisitions are published on."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        kind: Literal["pub", "push"] = "pub",
        bind: bool = False,
        topic: bytes | str = b"",
        send_timeout: float = 30.0,
        high_water_mark: int = 1000,
        context: zmq.Context[Any] | None = None,
        control: str | None = None,
        curve_server_key: str | Path | None = None,
        curve_client_key: str | Path | None = None,
        shared_memory: int | None = None,
    ) -> None:
        """With ``curve_server_key`` (the daemon's public certificate, ``NAME.key``) and
        ``curve_client_key`` (this client's own ``NAME.key_secret``), the ingest and
        control connections are CURVE-authenticated and encrypted.

        With ``shared_memory`` (bytes; same host, needs ``control``) the pixels go
        through a memory ring this publisher owns; the socket carries headers only.
        """
        if shared_memory is not None and control is None:
            raise ValueError("shared_memory needs the daemon's control endpoint (control=...)")
        self.kind = kind
        self.control = control
        self.send_timeout = send_timeout
        keys = ClientKeys.optional(curve_server_key, curve_client_key)
        self.ring = None if shared_memory is None else SharedRing(int(shared_memory))
        self.control_client = (
            None if control is None else ControlClient(control, context=context, keys=keys)
        )
        self.topic = topic.encode() if isinstance(topic, str) else topic
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.XPUB if kind == "pub" else zmq.PUSH)
        self._keys = keys
        self._high_water_mark = high_water_mark
        self._configure(self._socket)
        self._ring_socket: zmq.Socket[Any] | None = None
        """Where messages go once a ring is registered (the daemon's ring ingest)."""
        self._subscribers = 0
        self.endpoints: list[str] = []
        for endpoint in [endpoints] if isinstance(endpoints, str) else endpoints:
            if bind:
                self._socket.bind(endpoint)
                self.endpoints.append(self._socket.getsockopt_string(zmq.LAST_ENDPOINT))
            else:
                self._socket.connect(endpoint)
                self.endpoints.append(endpoint)

    def _configure(self, socket: zmq.Socket[Any]) -> None:
        if self._keys is not None:
            self._keys.apply(socket)
        socket.setsockopt(zmq.LINGER, int(self.send_timeout * 1000))
        socket.setsockopt(zmq.SNDHWM, self._high_water_mark)
        socket.setsockopt(zmq.SNDTIMEO, int(self.send_timeout * 1000))

    def wait_for_subscribers(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` subscriptions matching our topic arrived (PUB mode)."""
        if self.kind != "pub":
            return
        deadline = time.monotonic() + timeout
        while self._subscribers < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000), zmq.POLLIN):
                raise PublishError(f"no subscriber for topic {self.topic!r} within {timeout:g} s")
            event = self._socket.recv()
            if event[:1] == b"\x01" and self.topic.startswith(event[1:]):
                self._subscribers += 1

    def start(
        self,
        acquisition: str,
        metadata: MetaData | Mapping[str, Any],
        *,
        output_path: str,
        output_name: str,
        dtype: str,
        frame_shape: Sequence[int],
        shape: Sequence[int | None] | None = None,
        subscriber_timeout: float = 10.0,
        idle_timeout: float | None = None,
        confirm: bool | None = None,
        confirm_timeout: float | None = None,
        format: str | None = None,
        compression: str | None = None,
        compression_level: int | None = None,
        chunk_shape: Sequence[int] | None = None,
        shard_frames: int | None = None,
    ) -> PublishedAcquisition:
        """Send the start message and return a handle to send frames and stop.

        ``format`` names the storage format, ``compression`` its codec (``zstd``,
        ``deflate``, ...) and ``compression_level`` the codec's level (the daemon's
        defaults without them; a bad one is refused as ``bad_compression``).
        ``chunk_shape`` ([rows, columns] of a frame per chunk) and ``shard_frames``
        (frames a shard aims to hold) choose an OME-Zarr's chunks and shards.
        ``idle_timeout`` (seconds) replaces the daemon's for this acquisition, for
        time-lapses slower than it (the daemon caps it at its ``max_idle_timeout``).
        With ``confirm`` (default: when frames go through shared memory, where a refused
        start would otherwise only show as a ring nobody empties), wait on the control
        endpoint until the daemon shows the acquisition; PublishError with its reason
        if it refused it (within ``confirm_timeout``, default the send timeout).
        """
        ring = self._ring_token()
        if self._ring_socket is None:
            self.wait_for_subscribers(1, subscriber_timeout)
        confirming = ring is not None if confirm is None else confirm
        before = self._status() if confirming else None
        known = self._known([acquisition]) if confirming else None
        dump = (
            metadata.model_dump(mode="json") if isinstance(metadata, MetaData) else dict(metadata)
        )
        header = start_header(
            acquisition,
            metadata=dump,
            output_path=output_path,
            output_name=output_name,
            dtype=dtype,
            frame_shape=frame_shape,
            shape=shape,
            idle_timeout=idle_timeout,
            ring=ring,
            format=format,
            compression=compression,
            compression_level=compression_level,
            chunk_shape=chunk_shape,
            shard_frames=shard_frames,
        )
        self.send([self.topic, pack_header(header)])
        if before is not None:
            self._confirm(acquisition, before, confirm_timeout or self.send_timeout, known)
        return PublishedAcquisition(self, acquisition, np.dtype(dtype), tuple(frame_shape))

    def _status(self) -> DaemonStatus:
        if self.control_client is None:
            raise ValueError("confirming a start needs the daemon's control endpoint")
        try:
            return self.control_client.status()
        except ControlError as exc:
            raise PublishError(str(exc)) from None

    def _known(self, names: list[str]) -> dict[str, str]:
        assert self.control_client is not None
        try:
            return self.control_client.known_entries(names)
        except ControlError as exc:
            raise PublishError(str(exc)) from None

    def _confirm(
        self,
        acquisition: str,
        before: DaemonStatus,
        timeout: float,
        known: Mapping[str, str] | None,
    ) -> None:
        assert self.control_client is not None
        try:
            self.control_client.confirm_started([acquisition], before, timeout, known)
        except ControlError as exc:
            raise PublishError(f"{exc}{self.socket_hint()}") from None

    def socket_hint(self) -> str:
        """Why messages may never arrive, when this publisher's socket does not fit the
        daemon's ingest socket (PUSH against SUB, PUB against PULL); else empty."""
        if self.control_client is None or self._ring_socket is not None:
            return ""
        try:
            daemon = self.control_client.status(timeout=1.0).socket
        except ControlError:
            return ""
        fits = {"sub": "pub", "pull": "push"}.get(daemon, self.kind)
        if fits == self.kind:
            return ""
        return (
            f" (this publisher is {self.kind.upper()} and the daemon's ingest socket is "
            f"{daemon.upper()}: its messages never arrive; use kind={fits!r}, or start the "
            f"daemon with --socket {'pull' if self.kind == 'push' else 'sub'})"
        )

    def _ring_token(self) -> str | None:
        """The ring's token, registering it with the daemon the first time."""
        if self.ring is None:
            return None
        if self.ring.token is not None:
            return self.ring.token
        status = self._status()
        path = status.shared_memory
        if path is None:
            raise PublishError(
                "the daemon does not accept shared memory (its setting shared_memory is "
                "off); leave shared_memory unset to send pixels over the socket"
            )
        try:
            token = self.ring.register(path)
        except RingError as exc:
            raise PublishError(str(exc)) from None
        if status.shared_memory_ingest is not None:
            self._ring_socket = self._context.socket(zmq.PUSH)
            self._configure(self._ring_socket)
            self._ring_socket.connect(status.shared_memory_ingest)
        return token

    def send(self, parts: Sequence[Any], copy: bool = False) -> None:
        """Send one raw multipart message (zero-copy for buffers by default).

        Once a ring is registered, every message goes to the daemon's ring ingest
        socket (headers only; one socket keeps them in order).
        """
        sock, last = self._ring_socket or self._socket, len(parts) - 1
        try:
            # Part by part with plain int flags: half the cost of send_multipart per
            # message, which counts at tens of thousands of frames per second.
            for number, part in enumerate(parts):
                sock.send(part, 0 if number == last else _MORE, copy=copy)
        except zmq.Again:
            raise PublishError(
                "the receiver did not take the message in time (queue full?)" + self.socket_hint()
            ) from None

    def close(self) -> None:
        self._socket.close()
        if self._ring_socket is not None:
            self._ring_socket.close()
        if self.control_client is not None:
            self.control_client.close()
        if self.ring is not None:
            self.ring.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PublishedAcquisition:
    """An open acquisition on a Publisher: numbers messages (seq) and frames (index)."""

    def __init__(
        self,
        publisher: Publisher,
        acquisition: str,
        dtype: np.dtype[Any],
        frame_shape: tuple[int, ...],
    ) -> None:
        self.publisher = publisher
        self.acquisition = acquisition
        self.dtype = dtype
        self.frame_shape = frame_shape
        self.seq = 0
        self.next_index = 0

    def send(
        self,
        frames: np.ndarray[Any, Any],
        frame_metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        index: int | None = None,
        chunk: int | None = None,
        copy: bool = False,
    ) -> None:
        """Send frames (one frame, or a stack), split into messages of ``chunk`` frames.

        With ``copy=False`` (zero-copy) the array must not be changed until sent.
        """
        stack = np.ascontiguousarray(frames, dtype=self.dtype)
        if stack.shape == self.frame_shape:
            stack = stack[np.newaxis]
        if stack.shape[1:] != self.frame_shape:
            raise ValueError(f"frames must have shape {self.frame_shape}; got {stack.shape[1:]}")
        first = self.next_index if index is None else index
        step = chunk or len(stack)
        for offset in range(0, len(stack), step):
            part = stack[offset : offset + step]
            metadata = None if frame_metadata is None else frame_metadata[offset : offset + step]
            self.seq += 1
            if self.publisher.ring is not None:
                self._send_through_ring(first + offset, part, metadata)
                continue
            header = frames_header(self.acquisition, self.seq, first + offset, len(part), metadata)
            self.publisher.send([self.publisher.topic, pack_header(header), part.data], copy=copy)
        self.next_index = max(self.next_index, first + len(stack))

    def _send_through_ring(
        self,
        index: int,
        part: np.ndarray[Any, Any],
        metadata: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        """Copy the frames into a ring slot; send where they are."""
        publisher = self.publisher
        ring = publisher.ring
        assert ring is not None
        try:
            offset, slot = ring.slot(part.nbytes, publisher.send_timeout)
        except RingError as exc:
            raise PublishError(str(exc)) from None
        slot[:] = part.reshape(-1).view(np.uint8)
        header = frames_header(
            self.acquisition, self.seq, index, len(part), metadata, shm=(offset, part.nbytes)
        )
        try:
            publisher.send([publisher.topic, pack_header(header)])
        except PublishError:
            ring.give_back(offset)
            raise

    def stop(
        self, metadata: Mapping[str, Any] | None = None, wait: float | None = None
    ) -> AcquisitionEntry | None:
        """End the acquisition normally; ``metadata`` is merged over the start metadata.

        With ``wait`` (seconds) and the publisher's ``control`` endpoint, return the
        daemon's status entry once the files are final.
        """
        extra: dict[str, Any] = {"frame_count": self.next_index}
        if metadata:
            extra["metadata"] = dict(metadata)
        return self._end("stop", extra, wait)

    def _end(
        self, kind: Literal["stop", "abort"], extra: dict[str, Any] | None, wait: float | None
    ) -> AcquisitionEntry | None:
        self.seq += 1
        header = end_header(kind, self.acquisition, self.seq, extra)
        self.publisher.send([self.publisher.topic, pack_header(header)])
        if wait is None:
            return None
        client = self.publisher.control_client
        if client is None:
            raise ValueError("wait needs the daemon's control endpoint: Publisher(control=...)")
        try:
            return client.wait_for_acquisition(self.acquisition, wait)
        except ControlError as exc:
            raise PublishError(f"{exc}{self.publisher.socket_hint()}") from None

    def abort(
        self, reason: str | None = None, wait: float | None = None
    ) -> AcquisitionEntry | None:
        """End the acquisition as incomplete (``wait`` as for ``stop``)."""
        return self._end("abort", {"reason": reason} if reason else None, wait)
