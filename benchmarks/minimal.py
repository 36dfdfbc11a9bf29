"""The machine's ceilings: receiving loops with no framesink daemon code.

They do the least a separate receiving process must do with the same frames, so a
framesink figure next to them says what framesink costs, and a target they cannot reach
says the machine (its disk, its cores) is the limit, not framesink.
"""

from __future__ import annotations

import mmap
import os
import resource
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from . import publisher
from .cases import RAW_SLOT, Case, Options, Result

REGISTER = struct.Struct("<8sQ")
BATCH_BYTES = 64 << 20
TIMEOUT_MS = 30_000


def tcp_pipeline(options: Options, case: Case) -> Result:
    """PULL over tcp, one copy into an aligned buffer, an O_DIRECT write (plain write
    where refused), fsync."""
    context: zmq.Context[Any] = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 4)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    job: dict[str, Any] = {"endpoint": f"tcp://127.0.0.1:{port}", "kind": "raw"}
    job |= {"shape": case.shape, "count": case.count, "chunk": case.chunk}
    path = options.folder / "minimal.bin"
    message_bytes = case.chunk * case.frame_bytes
    raw = np.empty(message_bytes + 4096, np.uint8)
    staging = raw[-raw.ctypes.data % 4096 :][:message_bytes]
    with publisher.start(job) as child:
        fd = _open_direct(path)
        options.memory.prefault(case)
        start = time.perf_counter()
        publisher.go(child)
        offset = 0
        while offset < case.total_bytes:
            if not pull.poll(TIMEOUT_MS):
                raise RuntimeError("the raw publisher stopped sending")
            pixels = np.frombuffer(pull.recv_multipart(copy=False)[1].buffer, np.uint8)
            np.copyto(staging[: pixels.nbytes], pixels)
            offset += os.pwrite(fd, staging[: pixels.nbytes].data, offset)
        os.fsync(fd)
        total = time.perf_counter() - start
        os.close(fd)
        child.wait(60)
    pull.close(linger=0)
    context.term()
    path.unlink()
    return Result.timed(case, "minimal tcp pipeline", total, total)


def shm_pipeline(options: Options, case: Case) -> Result:
    """The shm publisher's ring, mapped read-only; each message names a slot, which is
    written to the file as it is (O_DIRECT, a batch per pwritev) and released; fsync.

    The publisher side is framesink's (the same ring code as the *shm* run), so the
    difference between the two runs is what the daemon costs.
    """
    context: zmq.Context[Any] = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    ring_socket = options.folder / "minimal-ring.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(ring_socket))
    listener.listen(1)
    listener.settimeout(TIMEOUT_MS / 1000)
    registered: list[tuple[socket.socket, mmap.mmap]] = []
    registration = threading.Thread(target=lambda: registered.append(_accept_ring(listener)))
    registration.start()
    job: dict[str, Any] = {"endpoint": f"tcp://127.0.0.1:{port}", "kind": "raw-shm"}
    job |= {"shape": case.shape, "count": case.count, "chunk": case.chunk}
    job |= {"ring_socket": str(ring_socket), "ring_bytes": options.ring_bytes}
    path = options.folder / "minimal.bin"
    with publisher.start(job) as child:
        registration.join()
        connection, ring = registered[0]
        fd = _open_direct(path)
        options.memory.prefault(case)
        cpu_before = _cpu_s()
        start = time.perf_counter()
        publisher.go(child)
        _write_slots(pull, connection, memoryview(ring), fd, case.total_bytes)
        os.fsync(fd)
        total = time.perf_counter() - start
        cpu = _cpu_s() - cpu_before
        os.close(fd)
        child.wait(60)
    connection.close()
    ring.close()
    listener.close()
    pull.close(linger=0)
    context.term()
    path.unlink()
    ring_socket.unlink()
    return Result.timed(
        case,
        "minimal shm pipeline",
        total,
        total,
        daemon_cpu_s=round(cpu, 2),
        cpu_s_per_gb=round(cpu / (case.total_bytes / 1e9), 3),
    )


def _accept_ring(listener: socket.socket) -> tuple[socket.socket, mmap.mmap]:
    """The daemon's side of registration (docs/protocol.md), without its checks."""
    connection, _ = listener.accept()
    message, fds, _flags, _address = socket.recv_fds(connection, REGISTER.size, 1)
    _magic, size = REGISTER.unpack(message)
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    ring = mmap.mmap(fds[0], size, flags, mmap.PROT_READ)
    os.close(fds[0])
    connection.sendall(b"OK " + b"0" * 32 + b"\n")
    return connection, ring


def _write_slots(
    pull: zmq.Socket[Any], connection: socket.socket, ring: memoryview, fd: int, total: int
) -> None:
    """Receive slot positions until ``total`` bytes are written; release each batch."""
    position = 0
    while position < total:
        if not pull.poll(TIMEOUT_MS):
            raise RuntimeError("the raw shm publisher stopped sending")
        slots: list[tuple[int, int]] = []
        batch = 0
        while batch < BATCH_BYTES:
            try:
                offset, length = RAW_SLOT.unpack(pull.recv_multipart(zmq.NOBLOCK)[1])
            except zmq.Again:
                break
            slots.append((offset, length))
            batch += length
        if not slots:
            continue
        _write_all(fd, [ring[offset : offset + length] for offset, length in slots], position)
        position += batch
        connection.sendall(b"".join(RAW_SLOT.pack(offset, length) for offset, length in slots))


def _write_all(fd: int, views: list[memoryview], position: int) -> None:
    while views:
        written = os.pwritev(fd, views, position)
        position += written
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views = views[1:]
        if views and written:
            views = [views[0][written:], *views[1:]]


def _open_direct(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return os.open(path, os.O_WRONLY | os.O_CREAT)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
