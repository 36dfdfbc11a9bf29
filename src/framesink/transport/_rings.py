"""Shared-memory rings: the daemon's side.

Publishers register a ring over a Unix socket that only their own user may use. The
daemon checks it (same user, a sealed memfd of the size announced), maps it read-only
and answers with a random token. A frames message then names a slot; the daemon lends
it to a writer, which writes it straight to the file and releases it. A publisher that
goes away ends its ring: what was already lent is still written (the mapping stays
valid: the seals forbid shrinking it), later slots are refused.

Once nothing uses an ended ring, the daemon unmaps it and only then closes the
connection: a publisher that waits for that end of file before unmapping its own side
frees the ring's pages itself, instead of the daemon's receive loop (tens of ms for a
ring of hundreds of MiB).

Nothing here blocks the receive loop: registrations are read when their connection is
readable (one that says nothing within HANDSHAKE_TIMEOUT_S is closed), rings are mapped
without faulting their pages in (a ring costs the daemon only what it writes from), and
their number, their total size and the rings of one process are bounded
(:class:`RingLimits`). A publisher that does not read its releases is cut off before
their backlog outgrows what an honest one could have (one record per slot of its ring).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import secrets
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core import SLOT_ALIGNMENT, LentSlots, RefusalError
from ._ring import REGISTER, REGISTER_MAGIC, RELEASE

log = logging.getLogger(__name__)

PEER_CREDENTIALS = struct.Struct("3i")
HANDSHAKE_TIMEOUT_S = 1.0
MAX_PENDING = 16
"""Registrations read at once; more connections meanwhile are refused at once."""
ACCEPT_PAUSE_S = 1.0
"""After the daemon ran out of descriptors, how long it stops taking registrations."""
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class RingLimits:
    """What publishers may register (each ring costs a descriptor and address space)."""

    max_ring_bytes: int
    max_rings: int = 64
    max_rings_per_process: int = 8
    max_total_bytes: int = 64 << 30


@dataclass
class Ring:
    """One registered ring: the read-only mapping, its lent slots, its connection."""

    token: str
    size: int
    memory: mmap.mmap
    connection: socket.socket | None
    lent: LentSlots
    owner_pid: int
    wake: Callable[[], None] = lambda: None
    """Asks the receive loop to :meth:`flush` (to end a ring whose last slot came back)."""
    acquisitions: int = 0
    """Open acquisitions started with this ring (the receive loop counts them)."""
    ending: bool = False
    """The publisher is done: unmap once nothing is in use."""
    cut_off: str | None = None
    """Why the daemon ends this ring (its publisher broke the protocol)."""
    _unsent: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def max_unsent(self) -> int:
        """Release records an honest publisher can have waiting: one per slot of the ring
        (it gets no slot back without reading them)."""
        return RELEASE.size * max(1, self.size // SLOT_ALIGNMENT)

    @property
    def in_use(self) -> bool:
        """Slots are lent, or an acquisition may still name slots."""
        return self.acquisitions > 0 or self.lent.count > 0

    def lend(self, offset: int, length: int, acquisition: str) -> RingLease:
        return self.lend_run(((offset, length),), acquisition)

    def lend_run(self, slots: tuple[tuple[int, int], ...], acquisition: str) -> RingLease:
        """Lend slots that lie back to back (offset, length each) as one lease; RefusalError
        as for one slot when any cannot be lent (then none is)."""
        offset = slots[0][0]
        length = sum(slot_length for _, slot_length in slots)
        if any(slot_offset % SLOT_ALIGNMENT for slot_offset, _ in slots[1:]):
            raise RefusalError(
                "bad_shm", f"a slot is not a multiple of {SLOT_ALIGNMENT}", acquisition
            )
        with self._lock:
            # A publisher that went away still sent these: its ring stays mapped (the
            # seals keep it whole) until its acquisitions end.
            self.lent.take(offset, length, acquisition)
        return RingLease(self, offset, length, slots)

    def release(self, offset: int, slots: tuple[tuple[int, int], ...]) -> None:
        """Free the lease at ``offset`` for the publisher, one record per slot (from any
        thread; never blocks).

        The records are sent by the next :meth:`flush`, which whoever releases calls
        once done (a writer releasing a batch of slots costs one send, not one per slot).
        """
        with self._lock:
            if not self.lent.give_back(offset) or self.connection is None:
                return
            if self.cut_off is not None:  # being ended: its publisher reads nothing more
                return
            for slot in slots:
                self._unsent += RELEASE.pack(*slot)
            if len(self._unsent) > self.max_unsent and self.cut_off is None:
                self.cut_off = (
                    f"the shared-memory publisher (pid {self.owner_pid}) does not read its "
                    f"releases ({len(self._unsent)} bytes waiting); its ring is ended"
                )
                self.wake()
        if self.ending and not self.lent.count:
            self.wake()

    def flush(self) -> None:
        """Send the releases waiting (from any thread)."""
        if not self._unsent:  # the common case, every loop turn: no lock needed to see it
            return
        with self._lock:
            if self.connection is not None:
                self._flush()

    def _flush(self) -> None:
        assert self.connection is not None
        if not self._unsent:
            return
        try:
            sent = self.connection.send(self._unsent)
        except BlockingIOError:
            return
        except OSError:
            self._unsent.clear()
            return
        del self._unsent[:sent]

    def disconnect(self) -> None:
        with self._lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None
            self._unsent.clear()

    def end(self) -> None:
        """Send the last releases, unmap, then close the connection (nothing in use)."""
        with self._lock:
            if self.connection is not None:
                self._flush()
            try:
                self.memory.close()
            except BufferError:  # a view still exists: unmapped when it goes
                log.debug("ring of pid %d: a view outlives it", self.owner_pid)
        self.disconnect()


@dataclass
class RingLease:
    """Slots lent to the daemon; ``release`` (idempotent) gives them back, unless they
    were handed over to a writer, which then releases them once written."""

    ring: Ring
    offset: int
    length: int
    slots: tuple[tuple[int, int], ...]
    """The publisher's slots (offset, length) the lease spans, released one by one."""
    _released: bool = False
    _handed_over: bool = False

    @property
    def view(self) -> memoryview:
        return memoryview(self.ring.memory)[self.offset : self.offset + self.length]

    def hand_over(self) -> Callable[[], None]:
        """The release, for the writer that now owns the slots (``release`` does nothing)."""
        self._handed_over = True
        return self._give_back

    def release(self) -> None:
        if not self._handed_over:
            self._give_back()

    def _give_back(self) -> None:
        if not self._released:
            self._released = True
            self.ring.release(self.offset, self.slots)


class RingServer:
    """The Unix socket publishers register rings on, and the rings it serves.

    Called from the receive loop only (``accept``, ``readable``, ``flush``); ``lend``
    and releases are thread-safe.
    """

    def __init__(
        self,
        path: Path,
        limits: RingLimits,
        on_event: Callable[[str], None],
        wake: Callable[[], None],
    ) -> None:
        """``on_event`` is told of refused and cut-off rings; ``wake`` asks the receive
        loop for a :meth:`flush` (an ended ring's last slot came back)."""
        self.path = path
        self.limits = limits
        self._on_event = on_event
        self._wake = wake
        self.rings: dict[str, Ring] = {}
        self._by_connection: dict[int, Ring] = {}
        self._pending: dict[int, tuple[socket.socket, float]] = {}
        """Connections whose registration has not arrived yet, with their deadline."""
        self._ending: list[Ring] = []
        """Rings whose publisher is gone or done, still in use."""
        self._paused_until = 0.0
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            self.listener.bind(str(path))
        except OSError:
            self.listener.close()
            raise
        finally:
            os.umask(previous)
        self.listener.listen(16)
        self.listener.setblocking(False)

    def watched_fds(self, now: float) -> list[int]:
        """What the receive loop polls: the listener (unless paused), registrations on
        their way, and every ring's connection."""
        listening = [self.listener.fileno()] if now >= self._paused_until else []
        return [*listening, *self._pending, *self._by_connection]

    def on_readable(self, fd: int) -> None:
        if fd == self.listener.fileno():
            self.accept()
        elif fd in self._pending:
            self._read_registration(fd)
        else:
            self.closed(fd)

    def accept(self) -> None:
        """Take waiting connections; their registrations are read once they arrive."""
        while len(self._pending) < MAX_PENDING:
            try:
                connection, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    raise
                self._paused_until = time.monotonic() + ACCEPT_PAUSE_S
                self._on_event(
                    f"cannot take a shared-memory registration: {exc.strerror}; "
                    f"registrations pause for {ACCEPT_PAUSE_S:g} s ({len(self.rings)} rings open)"
                )
                return
            connection.setblocking(False)
            self._pending[connection.fileno()] = (
                connection,
                time.monotonic() + HANDSHAKE_TIMEOUT_S,
            )

    def _read_registration(self, fd: int) -> None:
        connection, _deadline = self._pending[fd]
        try:
            ring = self._register(connection)
        except BlockingIOError:
            return
        except (OSError, ValueError) as exc:
            del self._pending[fd]
            self._refuse(connection, str(exc))
            return
        del self._pending[fd]
        self.rings[ring.token] = ring
        self._by_connection[fd] = ring
        log.info("shared-memory ring of %d bytes from pid %d", ring.size, ring.owner_pid)

    def _refuse(self, connection: socket.socket, why: str) -> None:
        self._on_event(f"refused a shared-memory ring: {why}")
        with contextlib.suppress(OSError):
            connection.send(f"NO {why}\n".encode())
        connection.close()

    def _expire_pending(self, now: float) -> None:
        for fd, (connection, deadline) in list(self._pending.items()):
            if now >= deadline:
                del self._pending[fd]
                self._refuse(
                    connection, f"no registration within {HANDSHAKE_TIMEOUT_S:g} s of connecting"
                )

    def closed(self, fd: int) -> None:
        """The publisher's connection ``fd`` is readable: it is done (end of file), or
        broke the protocol by sending after registration; either ends its ring."""
        ring = self._by_connection.get(fd)
        if ring is None or ring.connection is None:
            return
        try:
            data = ring.connection.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._cut_off(
                ring,
                f"a shared-memory publisher (pid {ring.owner_pid}) sent bytes after "
                "registration; its ring is ended",
            )
            return
        self._forget(ring)
        ring.ending = True
        self._ending.append(ring)
        log.info(
            "shared-memory ring of pid %d ended (%d slots still being written)",
            ring.owner_pid,
            ring.lent.count,
        )

    def _forget(self, ring: Ring) -> None:
        if ring.connection is not None:
            self._by_connection.pop(ring.connection.fileno(), None)
        self.rings.pop(ring.token, None)

    def _cut_off(self, ring: Ring, why: str) -> None:
        """End a ring whose publisher broke the protocol (slots lent are still written)."""
        self._forget(ring)
        self._on_event(why)
        ring.disconnect()

    def flush(self) -> None:
        """Send waiting releases; end rings cut off; unmap ended rings nothing uses any
        more; close registrations that did not come in time."""
        for ring in list(self.rings.values()):
            if ring.cut_off is not None:
                self._cut_off(ring, ring.cut_off)
            else:
                ring.flush()
        if self._ending:
            for ring in list(self._ending):
                ring.flush()
                if not ring.in_use:
                    self._ending.remove(ring)
                    ring.end()
        if self._pending:
            self._expire_pending(time.monotonic())

    def ring(self, token: str) -> Ring | None:
        return self.rings.get(token)

    def close(self) -> None:
        for ring in [*self.rings.values(), *self._ending]:
            ring.disconnect()
        for connection, _deadline in self._pending.values():
            connection.close()
        self.rings.clear()
        self._ending.clear()
        self._pending.clear()
        self._by_connection.clear()
        self.listener.close()
        self.path.unlink(missing_ok=True)

    def _register(self, connection: socket.socket) -> Ring:
        """Read and check a registration (BlockingIOError: not there yet)."""
        pid, uid, _gid = PEER_CREDENTIALS.unpack(
            connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CREDENTIALS.size)
        )
        message, fds, _flags, _address = socket.recv_fds(connection, REGISTER.size, 2)
        try:
            if uid != os.geteuid():
                raise ValueError(f"the ring belongs to user {uid}, not to this daemon's user")
            if len(message) != REGISTER.size or len(fds) != 1:
                raise ValueError("expected one registration record with one descriptor")
            magic, size = REGISTER.unpack(message)
            if magic != REGISTER_MAGIC:
                raise ValueError(f"unknown registration {magic!r}; expected {REGISTER_MAGIC!r}")
            self._check_limits(pid, size)
            memory = _map_sealed(fds[0], size, self.limits.max_ring_bytes)
        finally:
            for fd in fds:
                os.close(fd)
        token = secrets.token_hex(16)
        connection.send(f"OK {token}\n".encode())
        return Ring(token, size, memory, connection, LentSlots(size), pid, self._wake)

    def _check_limits(self, pid: int, size: int) -> None:
        held = [*self.rings.values(), *self._ending]
        limits = self.limits
        if len(held) >= limits.max_rings:
            raise ValueError(f"{len(held)} rings are registered (max_rings {limits.max_rings})")
        own = sum(1 for ring in held if ring.owner_pid == pid)
        if own >= limits.max_rings_per_process:
            raise ValueError(
                f"process {pid} has {own} rings (max_rings_per_process "
                f"{limits.max_rings_per_process})"
            )
        total = sum(ring.size for ring in held)
        if total + size > limits.max_total_bytes:
            raise ValueError(
                f"the rings registered hold {total} bytes; {size} more exceed "
                f"max_ring_total_bytes ({limits.max_total_bytes})"
            )


def _map_sealed(fd: int, size: int, limit: int) -> mmap.mmap:
    """Map a publisher's ring read-only, if it is a memfd of ``size`` sealed against shrinking."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("the ring descriptor is not a memory file")
    if info.st_size != size or not 0 < size <= limit:
        raise ValueError(
            f"the ring has {info.st_size} bytes, announced {size}, allowed up to {limit}"
        )
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        raise ValueError("the ring must be a memfd (memfd_create with MFD_ALLOW_SEALING)") from None
    if not seals & fcntl.F_SEAL_SHRINK:
        raise ValueError("the ring must be sealed against shrinking (F_SEAL_SHRINK)")
    # Not populated: the daemon faults in only the pages it writes from (the publisher
    # owns them), so a ring nobody writes to costs it nothing.
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
