"""The acquisition state machine, driven without any IO."""

from __future__ import annotations

import msgpack
import pytest

from framesink.core import (
    Drop,
    Finish,
    FinishReason,
    Message,
    Open,
    RefusalError,
    Router,
    SeqGap,
    Skip,
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


def test_a_full_bounded_shape_drops_the_rest_and_waits_for_its_stop() -> None:
    """Issue 11 #4: the stop of a full acquisition still delivers its metadata."""
    router = Router()
    router.route(_start(shape=[2, 3], axes="TZYX"), 0)
    actions = router.route(_frames("a", 1, 0, 8), 0)
    assert [type(a) for a in actions] == [Write, Drop]
    assert actions[0].count == 6  # type: ignore[union-attr]
    assert router.route(_frames("a", 2, 6, 1), 0) == [Drop("a", 1)]
    stop = decode(end_parts("stop", "a", 3, {"metadata": {"notes": "done"}, "frame_count": 9}))
    assert router.route(stop, 0) == [Finish("a", FinishReason.STOP, {"notes": "done"})]
    with pytest.raises(RefusalError) as caught:
        router.route(_stop("a", 4), 0)
    assert caught.value.reason == "late_message"


def test_a_seq_far_ahead_is_rejected_not_adopted() -> None:
    """Issue 11 #4b: one forged seq must not make every genuine message seq_backwards."""
    router = Router(max_seq_gap=100)
    router.route(_start(), 0)
    with pytest.raises(RefusalError) as caught:
        router.route(_frames("a", 2**62, 0, 1), 0)
    assert caught.value.reason == "seq_too_far"
    (write,) = router.route(_frames("a", 1, 0, 1), 0)
    assert isinstance(write, Write)
    gap, _ = router.route(_frames("a", 102, 1, 1), 0)
    assert gap == SeqGap("a", 100)


def test_a_start_that_sends_nothing_ends_after_start_timeout() -> None:
    router = Router(idle_timeout=60, start_timeout=5)
    router.route(_start("quiet"), 0)
    router.route(_start("busy"), 0)
    router.route(_frames("busy", 1, 0, 1), 1)
    assert router.expire(5) == [Finish("quiet", FinishReason.TIMEOUT, None)]
    assert router.expire(60) == []
    assert router.expire(61) == [Finish("busy", FinishReason.TIMEOUT, None)]


def test_a_start_may_ask_for_its_own_idle_timeout_up_to_the_cap() -> None:
    router = Router(idle_timeout=3, start_timeout=1000, max_idle_timeout=100)
    long = start_parts("lapse")
    header = msgpack.unpackb(long[1])
    long[1] = msgpack.packb({**header, "idle_timeout": 10})
    router.route(decode(long), 0)
    router.route(_frames("lapse", 1, 0, 1), 0)
    capped = start_parts("capped")
    capped[1] = msgpack.packb({**msgpack.unpackb(capped[1]), "idle_timeout": 1e9})
    router.route(decode(capped), 0)
    router.route(_frames("capped", 1, 0, 1), 0)
    assert router.expire(9.9) == []
    assert router.expire(10) == [Finish("lapse", FinishReason.TIMEOUT, None)]
    assert router.expire(100) == [Finish("capped", FinishReason.TIMEOUT, None)]


def test_a_declared_volume_beyond_the_gap_limit_is_rejected_at_start() -> None:
    router = Router(max_gap_bytes=1 << 20)
    with pytest.raises(RefusalError) as caught:
        router.route(_start(shape=[None, 1_000_000], axes="TZYX"), 0)
    assert caught.value.reason == "volume_too_large"
    assert router.open == {}


def test_too_many_open_names_the_holders() -> None:
    router = Router(max_open=2)
    router.route(_start("first"), 0)
    router.route(_start("second"), 1)
    with pytest.raises(RefusalError, match="oldest first: first, second"):
        router.route(_start("third"), 2)


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
    with pytest.raises(RefusalError) as caught:
        router.route(message, 0)
    assert caught.value.reason == reason


def test_gap_limit_protects_the_disk() -> None:
    router = Router(max_gap_bytes=10 * FRAME)
    router.route(_start(), 0)
    with pytest.raises(RefusalError, match="would leave"):
        router.route(_frames("a", 1, 1_000_000, 1), 0)
    assert router.open["a"].next_index == 0


def test_idle_timeout_and_limits() -> None:
    router = Router(idle_timeout=5, max_open=1)
    router.route(_start(), 0)
    with pytest.raises(RefusalError, match="too_many_open"):
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


def test_a_refused_frames_message_is_not_a_lost_one() -> None:
    """Operating, item 5: a message refused for its payload size counted as messages_lost."""
    router = Router()
    router.route(_start(), 0)
    short = decode(frames_parts("a", 3, 0, 1, frame_bytes=FRAME, payload=b"x"))
    with pytest.raises(RefusalError, match="payload_size"):
        router.route(short, 1)
    actions = router.route(_frames("a", 4, 0, 1), 2)
    assert actions[0] == SeqGap("a", 2), "seqs 1 and 2 never arrived; 3 did, and was refused"
    assert router.route(_frames("a", 5, 1, 1), 3)[0] != SeqGap("a", 2)
