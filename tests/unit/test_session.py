"""The writer thread of one acquisition: queued frames reach the file in large writes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framesink.core import ByteBudget, Finish, FinishReason, FrameLayout, SinkSpec, Skip
from framesink.daemon._session import GATHER_BYTES, Session

from ..helpers import FullDiskSink, GatedSink, pattern, read_metadata, read_tiff


def _spec(folder: Path, name: str) -> SinkSpec:
    layout = FrameLayout.create("TYX", "uint16", (64, 64))
    return SinkSpec(
        name, folder, "", name, {"axes": "TYX"}, layout, format="ome-tiff", fsync_interval=None
    )


def _gated(folder: Path, name: str) -> tuple[SinkSpec, GatedSink, ByteBudget]:
    """A prepared sink that holds its first write until ``sink.release`` is set."""
    spec = _spec(folder, name)
    sink = GatedSink(spec)
    sink.prepare()
    return spec, sink, ByteBudget(1 << 30)


def _finish_released(session: Session, sink: GatedSink) -> None:
    session.apply(Finish(session.acquisition, FinishReason.STOP))
    sink.release.set()
    assert session.join(10)


def _queue_write(session: Session, budget: ByteBudget, frames: np.ndarray[Any, Any]) -> None:
    assert budget.acquire(frames.nbytes, timeout=5)
    session.write(frames, [{"n": int(frames[0, 0, 0])}] * len(frames), frames.nbytes)


def test_queued_writes_are_gathered_and_keep_their_order(tmp_path: Path) -> None:
    frames = pattern(6, (64, 64), "uint16")
    spec, sink, budget = _gated(tmp_path, "g")
    session = Session("g", spec.layout, sink, budget)
    _queue_write(session, budget, frames[:1])
    assert sink.entered.wait(10)
    _queue_write(session, budget, frames[1:2])
    _queue_write(session, budget, frames[2:4])
    _queue_write(session, budget, frames[4:5])
    session.apply(Skip(session.acquisition, 0, 2))
    _queue_write(session, budget, frames[5:6])
    _finish_released(session, sink)

    assert sink.batch_sizes == [1, 3, 1]
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


@pytest.mark.parametrize("room", [0, 3])
def test_a_failed_batch_counts_exactly_the_frames_it_lost(tmp_path: Path, room: int) -> None:
    frames = pattern(6, (64, 64), "uint16")
    budget = ByteBudget(1 << 30)
    spec = _spec(tmp_path, "f")
    sink = FullDiskSink(spec, room)
    sink.prepare()
    session = Session("f", spec.layout, sink, budget)
    for index in range(6):
        _queue_write(session, budget, frames[index : index + 1])
    session.apply(Finish(session.acquisition, FinishReason.STOP))
    assert session.join(10)
    assert session.failed
    assert budget.used == 0
    assert sink.progress().counts.frames_written + session.frames_lost == 6
    assert sink.progress().counts.frames_written == room


def test_a_batch_lets_go_of_its_frames_releases_them_then_calls_after_release(
    tmp_path: Path,
) -> None:
    """A ring slot is unmapped once released: no view of it may outlive its release, and
    the ring sends a batch's releases together once they are all made."""
    frames = pattern(4, (64, 64), "uint16")
    spec, sink, budget = _gated(tmp_path, "r")
    events: list[str] = []
    views: list[weakref.ref[np.ndarray[Any, Any]]] = []

    def released(number: int) -> Callable[[], None]:
        def release() -> None:
            gc.collect()
            alive = sum(view() is not None for view in views[: number + 1])
            events.append(f"release {number}, views alive: {alive}")

        return release

    session = Session("r", spec.layout, sink, budget, after_release=lambda: events.append("sent"))
    for number in range(4):
        view = frames[number : number + 1].copy()
        views.append(weakref.ref(view))
        assert budget.acquire(view.nbytes, timeout=5)
        session.write(view, None, view.nbytes, released(number))
        del view
        if number == 0:
            assert sink.entered.wait(10)
    _finish_released(session, sink)
    assert events == [
        "release 0, views alive: 0",
        "sent",
        *(f"release {number}, views alive: 0" for number in (1, 2, 3)),
        "sent",
    ]


def test_batches_are_bounded_by_pixel_bytes_not_by_the_budget_cost(tmp_path: Path) -> None:
    """Frames in a ring cost the budget 4 KiB each; a batch still holds at most
    GATHER_BYTES of pixels, so that the ring's slots come back in steady portions."""
    frame = pattern(1, (64, 64), "uint16")
    per_batch = GATHER_BYTES // frame.nbytes
    spec, sink, budget = _gated(tmp_path, "b")
    session = Session("b", spec.layout, sink, budget)
    for number in range(per_batch + 101):
        assert budget.acquire(4096, timeout=5)
        session.write(frame, None, 4096)
        if number == 0:
            assert sink.entered.wait(10)
    _finish_released(session, sink)
    assert sink.batch_sizes == [1, per_batch, 100]
    assert budget.used == 0
