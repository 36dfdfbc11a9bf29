"""Ring frames messages handled together give exactly what handling them one by one gives.

The dispatcher applies a run of ring frames messages that follow each other as one
write (docs/protocol.md, *Runs*). Random traffic, with every kind of irregularity mixed
in, is handled both ways by real dispatchers writing real files; files, records and
counters must come out the same, and runs must have been taken.
"""

from __future__ import annotations

import mmap
import os
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framesink.core import (
    LentSlots,
    Router,
    SinkFactory,
    SinkSpec,
    frames_header,
    pack_header,
    start_header,
)
from framesink.daemon._counters import Counters
from framesink.daemon._dispatch import Dispatcher
from framesink.daemon._session import GATHER_BYTES
from framesink.daemon._settings import Settings
from framesink.formats import open_sink
from framesink.store import read_record
from framesink.transport import Received, Ring, SharedRing

from ..helpers import GatedSink, end_parts, read_tiff

TOKEN = "0" * 32
RING_BYTES = 4 << 20
SHAPE = (32, 64)
FRAME_BYTES = 32 * 64 * 2
"""One page per frame: slots of single frames lie back to back."""


class _Rings:
    """The dispatcher's view of a ring server that knows one ring."""

    def __init__(self, ring: Ring) -> None:
        self._ring = ring

    def ring(self, token: str) -> Ring | None:
        return self._ring if token == TOKEN else None


@dataclass
class Traffic:
    """Messages of two ring acquisitions, their pixels already in the ring."""

    ring: SharedRing
    messages: list[list[bytes]] = field(default_factory=list)
    head: int = 0
    seq: dict[str, int] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)

    def start(self, acquisition: str, shape: list[int | None] | None) -> None:
        header = start_header(
            acquisition,
            metadata={"axes": "TYX"},
            output_path=acquisition,
            output_name=acquisition,
            dtype="uint16",
            frame_shape=SHAPE,
            shape=shape,
            ring=TOKEN,
        )
        self.messages.append([b"t", pack_header(header)])
        self.seq[acquisition], self.index[acquisition] = 0, 0

    def frames(self, acquisition: str, count: int, quirk: str) -> None:
        seq = self.seq[acquisition] + (2 if quirk == "seq_gap" else 1)
        index = self.index[acquisition] + {"index_gap": 2, "index_back": -2}.get(quirk, 0)
        index = max(0, index)
        offset = self.head + (4096 if quirk == "unchained" else 0)
        length = count * FRAME_BYTES + (4096 if quirk == "bad_length" else 0)
        pixels = np.frombuffer(os.urandom(count * FRAME_BYTES), np.uint8)
        self.ring.memory[offset : offset + pixels.nbytes] = pixels
        self.head = offset + length
        metadata = [{"n": i} for i in range(count)] if quirk == "metadata" else None
        shm = (RING_BYTES + 4096, length) if quirk == "outside" else (offset, length)
        header = frames_header(acquisition, seq, index, count, metadata, shm=shm)
        self.messages.append([b"t", pack_header(header)])
        self.seq[acquisition], self.index[acquisition] = seq, index + count

    def stop(self, acquisition: str) -> None:
        self.seq[acquisition] += 1
        self.messages.append(end_parts("stop", acquisition, self.seq[acquisition]))


QUIRKS = ["seq_gap", "index_gap", "index_back", "bad_length", "metadata", "unchained", "outside"]


def _traffic(seed: int, ring: SharedRing) -> Traffic:
    rng = random.Random(seed)
    traffic = Traffic(ring)
    traffic.start("a", [40] if seed % 2 else None)
    traffic.start("b", None)
    for _ in range(60):
        acquisition = "b" if rng.random() < 0.15 else "a"
        quirk = rng.choice(QUIRKS) if rng.random() < 0.2 else ""
        traffic.frames(acquisition, rng.choice([1, 1, 1, 2, 3]), quirk)
        if rng.random() < 0.03:
            traffic.messages.append([b"t", b"\xc1 not msgpack"])
    traffic.stop("a")
    traffic.stop("b")
    return traffic


@pytest.fixture
def shared_ring() -> Iterator[SharedRing]:
    ring = SharedRing(RING_BYTES)
    yield ring
    ring.close()


def _dispatcher(
    root: Path,
    ring: SharedRing,
    connection: socket.socket | None,
    sink_factory: SinkFactory = open_sink,
) -> Dispatcher:
    root.mkdir(exist_ok=True)
    dispatcher = Dispatcher(Settings(data_root=root, fsync_interval=0), Counters(), sink_factory)
    memory = mmap.mmap(ring.fileno(), RING_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
    daemon_ring = Ring(TOKEN, RING_BYTES, memory, connection, LentSlots(RING_BYTES), os.getpid())
    dispatcher.rings.server = _Rings(daemon_ring)  # type: ignore[assignment]
    return dispatcher


def _outcome(root: Path, dispatcher: Dispatcher) -> dict[str, Any]:
    dispatcher.join(30)
    counters = dispatcher.counters.snapshot().model_dump()
    files: dict[str, Any] = {}
    for acquisition in ("a", "b"):
        record = read_record(root / acquisition)
        pixels = read_tiff(root / acquisition / record.files.image)[1]
        files[acquisition] = (
            record.frames_written,
            record.missing_ranges,
            record.frames_dropped,
            record.messages_lost,
            record.complete,
            pixels.tobytes(),
        )
    return {"counters": counters, "files": files}


class _RunCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs = 0
        route_run = Router.route_run

        def counted(router: Router, *args: Any) -> Any:
            self.runs += 1
            return route_run(router, *args)

        monkeypatch.setattr(Router, "route_run", counted)


@pytest.mark.parametrize("seed", range(12))
def test_runs_write_what_one_by_one_writes(
    seed: int, tmp_path: Path, shared_ring: SharedRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    traffic = _traffic(seed, shared_ring)
    counter = _RunCounter(monkeypatch)

    one_by_one = _dispatcher(tmp_path / "single", shared_ring, None)
    for parts in traffic.messages:
        one_by_one.handle([memoryview(part) for part in parts])
    expected = _outcome(tmp_path / "single", one_by_one)
    assert counter.runs == 0

    together = _dispatcher(tmp_path / "runs", shared_ring, None)
    together.handle_many(
        [Received([memoryview(p) for p in parts], None) for parts in traffic.messages]
    )
    assert _outcome(tmp_path / "runs", together) == expected
    if seed % 2 == 0:  # unbounded (a bounded run that would cross the end goes one by one)
        assert counter.runs > 0, "the traffic held runs, and they were taken"
    assert expected["counters"]["bad_messages"] > 0, "the quirks were exercised"


def test_a_run_releases_every_one_of_its_slots(tmp_path: Path, shared_ring: SharedRing) -> None:
    publisher_end, daemon_end = socket.socketpair()
    traffic = Traffic(shared_ring)
    traffic.start("a", None)
    traffic.start("b", None)
    for _ in range(3):
        traffic.frames("a", 2, "")
    traffic.stop("a")
    traffic.stop("b")
    dispatcher = _dispatcher(tmp_path, shared_ring, daemon_end)
    dispatcher.handle_many([Received([memoryview(p) for p in m], None) for m in traffic.messages])
    dispatcher.join(30)
    publisher_end.settimeout(5)
    data = b""
    while len(data) < 3 * 16:
        data += publisher_end.recv(4096)
    releases = sorted(struct.iter_unpack("<QQ", data))
    assert releases == [(i * 2 * FRAME_BYTES, 2 * FRAME_BYTES) for i in range(3)]
    assert read_record(tmp_path / "a").frames_written == 6
    publisher_end.close()
    daemon_end.close()


def test_a_batch_written_from_a_ring_holds_at_most_a_quarter_of_it(
    tmp_path: Path, shared_ring: SharedRing
) -> None:
    """Slots come back to the publisher while most of the ring is still its own to fill
    (with the socket path's gather bound, one batch would have held the whole ring)."""
    sinks: list[GatedSink] = []

    def gated(spec: SinkSpec) -> GatedSink:
        sinks.append(GatedSink(spec))
        return sinks[-1]

    root = tmp_path / "gated"
    dispatcher = _dispatcher(root, shared_ring, None, gated)
    traffic = Traffic(shared_ring)
    traffic.start("a", None)
    count = 600
    for _ in range(count):
        traffic.frames("a", 1, "")
    traffic.stop("a")
    for number, parts in enumerate(traffic.messages):  # one by one: each frame its own write
        dispatcher.handle([memoryview(part) for part in parts])
        if number == 1:
            assert sinks[0].entered.wait(10), "the first frame's write holds the writer"
    sinks[0].release.set()
    dispatcher.join(30)

    per_batch = (RING_BYTES // 4) // FRAME_BYTES
    assert per_batch < count - 1 < GATHER_BYTES // FRAME_BYTES
    assert sinks[0].batch_sizes == [1, per_batch, per_batch, count - 1 - 2 * per_batch]
    assert read_record(root / "a").frames_written == count


def test_ring_frames_after_the_end_or_before_any_start_are_late_or_orphan(
    tmp_path: Path, shared_ring: SharedRing
) -> None:
    """Review 2: such frames counted as bad_shm and bad_messages (slot checked first)."""
    traffic = Traffic(shared_ring)
    traffic.start("a", None)
    traffic.frames("a", 1, "")
    traffic.stop("a")
    traffic.frames("a", 1, "")  # after its stop: late
    traffic.seq["nobody"], traffic.index["nobody"] = 0, 0
    traffic.frames("nobody", 1, "")  # never started: orphan
    dispatcher = _dispatcher(tmp_path, shared_ring, None)
    for parts in traffic.messages:
        dispatcher.handle([memoryview(part) for part in parts])
    dispatcher.join(30)
    counters = dispatcher.counters.snapshot()
    assert counters.rejected_by_reason == {"late_message": 1, "orphan": 1}
    assert counters.bad_messages == 0
    assert counters.orphan_messages == 1
    assert counters.late_messages == 1
