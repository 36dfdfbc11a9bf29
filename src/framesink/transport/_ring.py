"""Shared-memory rings: the publisher's side.

The ring is an anonymous ``memfd`` sealed against shrinking: it has no name anyone
could open, cannot be truncated under the daemon (no SIGBUS), and the kernel frees it
when the last process holding it exits, however it exits. The publisher hands the
descriptor to the daemon once, over the daemon's Unix socket (``SCM_RIGHTS``), gets a
token back, and from then on only slot positions travel over ZeroMQ; releases come back
on the Unix socket (docs/protocol.md, *Shared memory*).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core import RELEASE_RECORD_BYTES, FramesinkError, RingAllocator

REGISTER_MAGIC = b"FSRING01"
REGISTER = struct.Struct("<8sQ")
RELEASE = struct.Struct("<QQ")
REPLY_MAX = 4096
HANDSHAKE_TIMEOUT_S = 5.0
CLOSE_WAIT_S = 1.0
"""How long closing a ring waits for the daemon to let go of it (then it just closes)."""
PAGE = mmap.PAGESIZE
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class RingError(FramesinkError, RuntimeError):
    """The ring could not be registered, or the daemon stopped serving it."""


class SharedRing:
    """A memory ring of ``size`` bytes that a daemon reads frames from.

    ``slot(length, timeout)`` lends a writable, page-aligned slot; the daemon's
    releases (read whenever a slot is asked for) make space again.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._fd = os.memfd_create("framesink-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self._fd, size)
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, SEALS)
            self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self._fd)
            raise
        self.memory = np.frombuffer(self._map, np.uint8)
        self.memory[::PAGE] = 0  # the publisher owns the pages: allocate them here, once
        self._allocator = RingAllocator(size)
        self._connection: socket.socket | None = None
        self._pending = b""
        self._readable = select.poll()
        self.token: str | None = None

    def register(self, path: str | Path) -> str:
        """Hand the ring to the daemon listening on ``path``; return its token."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            connection.connect(str(path))
            socket.send_fds(connection, [REGISTER.pack(REGISTER_MAGIC, self.size)], [self._fd])
            reply = _read_line(connection)
        except OSError as exc:
            connection.close()
            raise RingError(f"cannot hand the ring to the daemon at {path}: {exc}") from None
        if not reply.startswith("OK "):
            connection.close()
            raise RingError(
                f"the daemon refused the shared-memory ring: {reply.removeprefix('NO ')}"
            )
        connection.setblocking(False)
        self._connection = connection
        self._readable.register(connection, select.POLLIN)
        self.token = reply[3:]
        return self.token

    def slot(self, length: int, timeout: float) -> tuple[int, np.ndarray[Any, np.dtype[np.uint8]]]:
        """A free slot: its offset and its bytes; RingError after ``timeout`` s full."""
        self._registered()
        deadline = time.monotonic() + timeout
        while True:
            # A poll is cheap (no exception when nothing came), and it also sees a
            # daemon that went away at once.
            if self._readable.poll(0):
                self._take_releases(0.0)
            offset = self._allocator.allocate(length)
            if offset is not None:
                return offset, self.memory[offset : offset + length]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RingError(
                    f"the ring stayed full for {timeout:g} s (the daemon releases nothing)"
                )
            self._take_releases(remaining)

    def give_back(self, offset: int) -> None:
        """Return a slot that was never sent (e.g. the send failed)."""
        self._allocator.release(offset)

    def fileno(self) -> int:
        """The ring's memfd (sealed: it cannot shrink)."""
        return self._fd

    @property
    def lent(self) -> int:
        return self._allocator.lent

    def collect_releases(self, wait: float = 0.0) -> None:
        """Take the daemon's releases (waiting up to ``wait`` s for the first)."""
        self._take_releases(wait)

    def _registered(self) -> socket.socket:
        if self._connection is None:
            raise RingError("the ring is not registered with a daemon")
        return self._connection

    def _take_releases(self, wait: float) -> None:
        connection = self._registered()
        if wait > 0:
            select.select([connection], [], [], wait)
        data = self._pending
        while True:
            try:
                chunk = connection.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                raise RingError(f"the daemon's ring connection failed: {exc}") from None
            if not chunk:
                self._apply_releases(data)
                raise RingError(
                    "the daemon closed the shared-memory ring (it stopped or restarted); "
                    "start the acquisition again"
                )
            data += chunk
        self._apply_releases(data)

    def _apply_releases(self, data: bytes) -> None:
        whole = len(data) - len(data) % RELEASE_RECORD_BYTES
        for offset, _length in RELEASE.iter_unpack(data[:whole]):
            self._allocator.release(offset)
        self._pending = data[whole:]

    def close(self) -> None:
        """End the ring (idempotent); the daemon keeps what it still writes.

        Waits up to CLOSE_WAIT_S for the daemon to unmap the ring first, so that the
        pages are freed here and not in the daemon's receive loop.
        """
        if self._connection is not None:
            self._readable.unregister(self._connection)
            self._part_from_daemon(self._connection)
            self._connection.close()
            self._connection = None
        if self._fd >= 0:
            del self.memory
            with contextlib.suppress(BufferError):  # a slot still in use: freed with it
                self._map.close()
            os.close(self._fd)
            self._fd = -1

    def _part_from_daemon(self, connection: socket.socket) -> None:
        """Say the ring is done (end of file), take the last releases, and wait for the
        daemon's end of file: it comes once the daemon no longer maps the ring."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        try:
            connection.shutdown(socket.SHUT_WR)
            while (remaining := deadline - time.monotonic()) > 0:
                if not select.select([connection], [], [], remaining)[0]:
                    return
                self._take_releases(0.0)
        except (OSError, RingError, ValueError):
            return


def _read_line(connection: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(REPLY_MAX)
        if not chunk:
            break
        data += chunk
        if len(data) > REPLY_MAX:
            break
    return data.decode(errors="replace").strip()
