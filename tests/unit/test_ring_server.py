"""The daemon's ring bookkeeping on its own: a publisher that never reads its releases
is cut off before their backlog outgrows what an honest one could have."""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from framesink.core import SLOT_ALIGNMENT, LentSlots
from framesink.transport import Ring, RingLimits, RingServer

RING_BYTES = 16 * SLOT_ALIGNMENT


@pytest.fixture
def silent_publisher() -> Iterator[tuple[Ring, socket.socket]]:
    """A ring whose publisher end of the connection is never read."""
    publisher, daemon = socket.socketpair()
    daemon.setblocking(False)
    memory = mmap.mmap(-1, RING_BYTES)
    ring = Ring("t" * 32, RING_BYTES, memory, daemon, LentSlots(RING_BYTES), os.getpid())
    yield ring, publisher
    ring.disconnect()
    publisher.close()
    memory.close()


def _lend_and_release(ring: Ring, times: int) -> None:
    for _ in range(times):
        lease = ring.lend(0, SLOT_ALIGNMENT, "a")
        lease.release()
        ring.flush()


def test_a_publisher_that_never_reads_its_releases_is_cut_off(
    silent_publisher: tuple[Ring, socket.socket],
) -> None:
    ring, _publisher = silent_publisher
    woken: list[bool] = []
    ring.wake = lambda: woken.append(True)
    _lend_and_release(ring, 100_000)  # 1.6 MB of release records: more than a socket buffer
    assert ring.cut_off is not None
    assert "does not read its releases" in ring.cut_off
    assert woken, "the receive loop is asked to end the ring"
    assert len(ring._unsent) <= ring.max_unsent + 16, "the backlog stays bounded"


def test_the_server_ends_a_ring_it_cut_off_and_says_why(
    tmp_path: Path, silent_publisher: tuple[Ring, socket.socket]
) -> None:
    ring, _publisher = silent_publisher
    events: list[str] = []
    server = RingServer(tmp_path / "rings", RingLimits(1 << 30), events.append, lambda: None)
    try:
        assert ring.connection is not None
        server.rings[ring.token] = ring
        server._by_connection[ring.connection.fileno()] = ring
        _lend_and_release(ring, 100_000)
        server.flush()
        assert server.ring(ring.token) is None
        assert ring.connection is None
        assert any("does not read its releases" in event for event in events)
    finally:
        server.close()


def test_an_honest_backlog_is_never_cut_off(
    silent_publisher: tuple[Ring, socket.socket],
) -> None:
    """Every slot of the ring released at once, unread: one record each, and no more."""
    ring, _publisher = silent_publisher
    ring.connection.close() if ring.connection is not None else None
    publisher, daemon = socket.socketpair()
    daemon.setblocking(False)
    daemon.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # nothing fits: all waits
    ring.connection = daemon
    leases = [ring.lend(i * SLOT_ALIGNMENT, SLOT_ALIGNMENT, "a") for i in range(16)]
    for lease in leases:
        lease.release()
    ring.flush()
    assert ring.cut_off is None
    publisher.close()
