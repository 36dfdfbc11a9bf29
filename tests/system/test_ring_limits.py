"""The shared-memory door under abuse by a same-user process: bounded rings, no crash
when descriptors run out, no stalled ingest from idle connections, no memory taken by a
ring nobody writes to."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from framesink import Publisher
from framesink.transport import RingError, SharedRing

from ..helpers import DaemonProcess, pattern, read_tiff, start_tyx

StartDaemon = Callable[..., DaemonProcess]
SMALL_RING = 16 * 4096
SHAPE = (64, 64)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _register(path: str) -> SharedRing:
    ring = SharedRing(SMALL_RING)
    try:
        ring.register(path)
    except BaseException:
        ring.close()
        raise
    return ring


def test_rings_beyond_the_limits_are_refused_with_the_reason(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(
        socket="pull",
        env={"FRAMESINK_MAX_RINGS": "3", "FRAMESINK_MAX_RINGS_PER_PROCESS": "2"},
    )
    path = daemon.status().shared_memory
    assert path is not None
    rings = [_register(path), _register(path)]
    try:
        with pytest.raises(RingError, match="max_rings_per_process 2"):
            _register(path)
        status = daemon.wait_for(lambda s: s.counters.rings_refused == 1)
        assert status.state == "running"
    finally:
        for ring in rings:
            ring.close()
    assert daemon.stop() == 0


OTHER_PROCESS = """
import sys
from framesink.transport import SharedRing
ring = SharedRing(16 * 4096)
print(ring.register(sys.argv[1]), flush=True)
sys.stdin.read()
"""


def test_the_number_of_rings_is_bounded_across_processes(start_daemon: StartDaemon) -> None:
    import subprocess
    import sys

    daemon = start_daemon(socket="pull", env={"FRAMESINK_MAX_RINGS": "1"})
    path = daemon.status().shared_memory
    assert path is not None
    holder = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None
        assert len(holder.stdout.readline().strip()) == 32
        with pytest.raises(RingError, match=r"max_rings 1\)"):
            _register(path)
    finally:
        holder.communicate("", timeout=10)
    assert daemon.stop() == 0


def _few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))


def test_running_out_of_descriptors_refuses_rings_and_the_daemon_goes_on(
    start_daemon: StartDaemon,
) -> None:
    """A same-user process registers rings until the daemon has no descriptor left: the
    registration is refused, the daemon keeps running, and an acquisition already open
    is finished whole."""
    daemon = start_daemon(
        socket="pull",
        preexec_fn=_few_descriptors,
        env={"FRAMESINK_MAX_RINGS": "1000", "FRAMESINK_MAX_RINGS_PER_PROCESS": "1000"},
    )
    path = daemon.status().shared_memory
    assert path is not None
    frames = pattern(10, SHAPE, "uint16")
    rings: list[SharedRing] = []
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        run = start_tyx(publisher, "kept", dtype="uint16", frame_shape=SHAPE)
        run.send(frames[:5])
        daemon.wait_for(lambda s: (e := s.entry("kept")) is not None and e.frames_written == 5)
        refused = None
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(5)]
        try:
            for _ in range(400):
                try:
                    rings.append(_register(path))
                except RingError as exc:
                    refused = exc
                    break
            assert refused is not None, "the descriptors ran out before 400 rings"
            assert "Too many open files" in str(refused)
            for connection in idle:  # the daemon has no descriptor left to accept them
                connection.connect(path)
            deadline = time.monotonic() + 10
            while "cannot take a shared-memory registration" not in daemon.log():
                assert time.monotonic() < deadline, "no word of the full descriptor table"
                time.sleep(0.05)
            assert daemon.process.poll() is None, "the daemon is still running"
        finally:
            for connection in idle:
                connection.close()
            for ring in rings:
                ring.close()
        run.send(frames[5:], index=5)
        entry = run.stop(wait=30)
    assert entry is not None
    assert (entry.frames_written, entry.complete) == (10, True)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "kept" / "kept.ome.tiff")[1], frames)
    assert daemon.status().counters.rings_refused >= 2
    assert daemon.stop() == 0


def test_idle_connections_to_the_ring_socket_do_not_stall_ingest(
    start_daemon: StartDaemon,
) -> None:
    """Each idle connection used to hold the receive loop for a second."""
    daemon = start_daemon(socket="pull")
    path = daemon.status().shared_memory
    assert path is not None
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(10)]
    try:
        for connection in idle:
            connection.connect(path)
        frames = pattern(20, SHAPE, "uint16")
        began = time.monotonic()
        with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
            run = start_tyx(publisher, "busy", dtype="uint16", frame_shape=SHAPE)
            run.send(frames)
            entry = run.stop(wait=6)
        assert entry is not None, f"not finished after {time.monotonic() - began:.1f} s"
        assert entry.frames_written == 20
        status = daemon.wait_for(lambda s: s.counters.rings_refused == 10)
        assert status.state == "running"
        assert "no registration within 1 s" in daemon.log()
        for connection in idle:
            connection.settimeout(5)
            assert connection.recv(4096).startswith(b"NO no registration")
    finally:
        for connection in idle:
            connection.close()
    assert daemon.stop() == 0


def test_a_ring_nobody_writes_to_costs_the_daemon_no_memory(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    path = daemon.status().shared_memory
    assert path is not None
    before = _rss_bytes(daemon.process.pid)
    ring = SharedRing(256 << 20)
    try:
        ring.register(path)
        daemon.wait_for(lambda s: s.state == "running")
        grown = _rss_bytes(daemon.process.pid) - before
    finally:
        ring.close()
    assert grown < 32 << 20, f"the daemon grew {grown >> 20} MiB for a ring it never read"
    assert daemon.stop() == 0
