"""The acquisition state machine, driven without any IO."""

from __future__ import annotations

import pytest

from framesink.core import (
    Drop,
    Finish,
    FinishReason,
    Message,
    Open,
    Router,
    SeqGap,
    Skip,
    WireError,
    Write,
    decode,
    end_header,
    frames_header,
    pack_header,
)

from ..helpers import end_parts, frames_parts, start_parts

FRAME = 4 * 4 * 2


def _start(name: str = "a", shape: list[int | None] | None = None, axes: str = "TYX") -> Message:
    return decode(start_parts(name, axes=axes, shape=shape))


def _frames(name: str, seq: int, index: int, count: int) -> Message:
    return decode(frames_parts(name, seq, index, count, frame_bytes=FRAME))


def _stop(name: str, seq: int) -> Message:
    return decode(end_parts("stop", name, seq))


def test_in_order_frames_are_written_and_stop_finishes() -> None:
    router = Router()
    assert isinstance(router.route(_start(), 0)[0], Open)
    (write,) = router.route(_frames("a", 1, 0, 3), 1)
    assert isinstance(write, Write)
    assert (write.index, write.count, write.payload.nbytes) == (
        0,
        3,
        3 * FRAME,
    )
    assert router.route(_stop("a", 2), 2) == [Finish("a", FinishReason.STOP, None)]
    assert "a" not in router.open


def test_gap_is_skipped_and_late_or_duplicate_frames_dropped() -> None:
    router = Router()
    router.route(_start(), 0)
    router.route(_frames("a", 1, 0, 2), 0)
    gap, write = router.route(_frames("a", 2, 5, 2), 0)
    assert gap == Skip("a", 2, 3)
    assert isinstance(write, Write)
    assert (write.index, write.count) == (5, 2)
    assert router.route(_frames("a", 3, 3, 1), 0) == [Drop("a", 1)]
    overlap = router.route(_frames("a", 4, 6, 3), 0)
    assert isinstance(overlap[0], Write)
    assert (overlap[0].index, overlap[0].count) == (7, 2)
    assert overlap[1] == Drop("a", 1)
    assert overlap[0].payload.tobytes() == bytes([1]) * FRAME + bytes([2]) * FRAME


def test_bounded_shape_finishes_when_full_and_drops_the_rest() -> None:
    router = Router()
    router.route(_start(shape=[2, 3], axes="TZYX"), 0)
    actions = router.route(_frames("a", 1, 0, 8), 0)
    assert [type(a) for a in actions] == [Write, Drop, Finish]
    assert actions[0].count == 6  # type: ignore[union-attr]
    with pytest.raises(WireError) as caught:
        router.route(_stop("a", 2), 0)
    assert caught.value.reason == "late_message"


@pytest.mark.parametrize(
    ("setup", "message", "reason"),
    [
        ([], _frames("ghost", 1, 0, 1), "orphan"),
        ([_start()], _start(), "duplicate_start"),
        ([_start(), _frames("a", 1, 0, 1)], _frames("a", 1, 1, 1), "seq_backwards"),
        (
            [_start()],
            decode([b"", pack_header(frames_header("a", 1, 0, 1)), b"short"]),
            "payload_size",
        ),
    ],
)
def test_rejections(setup: list[Message], message: Message, reason: str) -> None:
    router = Router()
    for earlier in setup:
        router.route(earlier, 0)
    with pytest.raises(WireError) as caught:
        router.route(message, 0)
    assert caught.value.reason == reason


def test_gap_limit_protects_the_disk() -> None:
    router = Router(max_gap_bytes=10 * FRAME)
    router.route(_start(), 0)
    with pytest.raises(WireError, match="would leave"):
        router.route(_frames("a", 1, 1_000_000, 1), 0)
    assert router.open["a"].next_index == 0


def test_idle_timeout_and_limits() -> None:
    router = Router(idle_timeout=5, max_open=1)
    router.route(_start(), 0)
    with pytest.raises(WireError, match="too_many_open"):
        router.route(_start("b"), 0)
    assert router.next_deadline() == 5
    assert router.expire(4.9) == []
    assert router.expire(5.0) == [Finish("a", FinishReason.TIMEOUT, None)]
    assert router.next_deadline() is None


def test_seq_gaps_are_counted_not_rejected() -> None:
    router = Router()
    router.route(_start(), 0)
    gap, write = router.route(_frames("a", 4, 0, 1), 0)
    assert gap == SeqGap("a", 3)
    assert isinstance(write, Write)


def test_stop_with_frame_count_records_the_lost_tail() -> None:
    router = Router()
    router.route(_start(), 0)
    router.route(_frames("a", 1, 0, 2), 0)
    stop = decode([b"", pack_header(end_header("stop", "a", 2, {"frame_count": 5}))])
    assert router.route(stop, 0) == [Skip("a", 2, 3), Finish("a", FinishReason.STOP, None)]


def test_backpressure_time_does_not_count_as_idle() -> None:
    router = Router(idle_timeout=5)
    router.route(_start(), 0)
    router.extend_deadlines(10)
    assert router.expire(14) == []
    assert router.expire(15) == [Finish("a", FinishReason.TIMEOUT, None)]
