"""The writer thread of one acquisition: queued frames reach the file in large writes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framesink.budget import ByteBudget
from framesink.record import FinishReason
from framesink.session import Session
from framesink.writer import FrameMetadata, StreamWriter

from .conftest import pattern, read_metadata, read_tiff

Batch = Sequence[tuple[np.ndarray[Any, Any], Sequence[FrameMetadata] | None]]


class GatedWriter(StreamWriter):
    """Holds its first batch until released, so that more items queue up behind it."""

    def __init__(self, folder: Path) -> None:
        super().__init__(
            folder, "g", {"axes": "TYX"}, dtype="uint16", frame_shape=(64, 64), fsync_interval=None
        )
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_batch(self, batch: Batch) -> None:
        self.batch_sizes.append(len(batch))
        self.entered.set()
        assert self.release.wait(10)
        super().write_batch(batch)


def _queue_write(session: Session, budget: ByteBudget, frames: np.ndarray[Any, Any]) -> None:
    assert budget.acquire(frames.nbytes, timeout=5)
    session.write(frames, [{"n": int(frames[0, 0, 0])}] * len(frames), frames.nbytes)


def test_queued_writes_are_gathered_and_keep_their_order(tmp_path: Path) -> None:
    frames = pattern(6, (64, 64), "uint16")
    budget = ByteBudget(1 << 30)
    writer = GatedWriter(tmp_path)
    session = Session("g", writer, budget)
    _queue_write(session, budget, frames[:1])
    assert writer.entered.wait(10)
    _queue_write(session, budget, frames[1:2])
    _queue_write(session, budget, frames[2:4])
    _queue_write(session, budget, frames[4:5])
    session.skip(2)
    _queue_write(session, budget, frames[5:6])
    session.finish(FinishReason.STOP)
    writer.release.set()
    assert session.join(10)

    assert writer.batch_sizes == [1, 3, 1]
    assert budget.used == 0
    _, pixels, _ = read_tiff(tmp_path / "g.ome.tiff")
    expected = np.concatenate([frames[:5], np.zeros((2, 64, 64), "uint16"), frames[5:]])
    np.testing.assert_array_equal(pixels, expected)
    record = read_metadata(tmp_path)["framesink"]
    assert (record["frames_written"], record["missing_ranges"]) == (6, [[5, 6]])
    sidecar = (tmp_path / "g.frames.jsonl").read_text().splitlines()
    assert [line.split('"index": ')[1].split(",")[0] for line in sidecar] == [
        "0",
        "1",
        "2",
        "3",
        "4",
        "7",
    ]


class FailingWriter(StreamWriter):
    """The file may grow by ``room`` frames, then the disk is full."""

    def __init__(self, folder: Path, room: int) -> None:
        super().__init__(
            folder, "f", {"axes": "TYX"}, dtype="uint16", frame_shape=(64, 64), fsync_interval=None
        )
        self.room = room

    def write_batch(self, batch: Batch) -> None:
        frames = sum(len(chunk) for chunk, _ in batch)
        if self.frames_in_file + frames > self.room:
            fit = self.room - self.frames_in_file
            stacked = np.concatenate([chunk for chunk, _ in batch])
            super().write_batch([(stacked[:fit], None)])
            raise OSError(28, "No space left on device")
        super().write_batch(batch)


@pytest.mark.parametrize("room", [0, 3])
def test_a_failed_batch_counts_exactly_the_frames_it_lost(tmp_path: Path, room: int) -> None:
    frames = pattern(6, (64, 64), "uint16")
    budget = ByteBudget(1 << 30)
    session = Session("f", FailingWriter(tmp_path, room), budget)
    for index in range(6):
        _queue_write(session, budget, frames[index : index + 1])
    session.finish(FinishReason.STOP)
    assert session.join(10)
    assert session.failed
    assert budget.used == 0
    assert session.writer.frames_written + session.frames_lost == 6
    assert session.writer.frames_written == room
