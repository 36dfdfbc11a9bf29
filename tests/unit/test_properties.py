"""Property-based tests: random and mutated input never escapes as anything but RefusalError."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framesink.core import (
    Drop,
    Finish,
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
    start_header,
)

from ..helpers import end_parts, frames_parts, start_parts

FRAME_BYTES = 2 * 3 * 2
VALID_START = start_header(
    "acq",
    metadata={"axes": "TYX"},
    output_path="p",
    output_name="n",
    dtype="uint16",
    frame_shape=[2, 3],
)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


def _decode_or_reject(parts: list[bytes]) -> Message | None:
    try:
        return decode(parts)
    except RefusalError as error:
        assert error.reason
        assert error.detail
        return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=4))
def test_random_bytes_are_accepted_or_rejected_with_a_reason(parts: list[bytes]) -> None:
    _decode_or_reject(parts)


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(
        [VALID_START, frames_header("acq", 1, 0, 1), end_header("stop", "acq", 2)]
    ),
    key=st.sampled_from(
        [
            "v",
            "type",
            "acquisition",
            "seq",
            "metadata",
            "output",
            "dtype",
            "frame_shape",
            "shape",
            "index",
            "count",
            "frame_metadata",
            "extra",
        ]
    ),
    value=msgpack_values,
    delete=st.booleans(),
)
def test_mutated_headers_are_accepted_or_rejected_with_a_reason(
    base: dict[str, Any], key: str, value: Any, delete: bool
) -> None:
    header = dict(base)
    if delete:
        header.pop(key, None)
    else:
        header[key] = value
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    payload = [bytes(FRAME_BYTES)] if base["type"] == "frames" else []
    _decode_or_reject([b"t", packed, *payload])


message_specs = st.lists(
    st.tuples(
        st.sampled_from(["start", "frames", "stop", "abort"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 12),
        st.integers(0, 20),
        st.integers(1, 4),
        st.booleans(),
    ),
    max_size=40,
)


def _message(kind: str, name: str, seq: int, index: int, count: int, short: bool) -> list[bytes]:
    if kind == "start":
        return start_parts(name, frame_shape=(2, 3))
    if kind == "frames":
        return frames_parts(
            name,
            seq,
            index,
            count,
            frame_bytes=FRAME_BYTES,
            payload=bytes(count * FRAME_BYTES - short),
        )
    return end_parts(kind, name, seq)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_specs, st.sampled_from([None, [5]]))
def test_router_accounts_for_every_frame(
    specs: list[tuple[str, str, int, int, int, bool]], shape: list[int] | None
) -> None:
    router = Router(idle_timeout=1e9, max_gap_bytes=100 * FRAME_BYTES)
    filled: dict[str, int] = {}
    for now, spec in enumerate(specs):
        parts = _message(*spec)
        if spec[0] == "start" and shape is not None:
            parts = start_parts(spec[1], axes="ZYX", frame_shape=(2, 3), shape=shape)
        message = _decode_or_reject(parts)
        if message is None:
            continue
        try:
            actions = router.route(message, now)
        except RefusalError as error:
            assert error.reason
            continue
        for action in actions:
            if isinstance(action, Open):
                filled[action.acquisition] = 0
            elif isinstance(action, Write | Skip):
                first = action.index if isinstance(action, Write) else action.first
                assert first == filled[action.acquisition], (
                    "frames must be filled in order, without holes"
                )
                filled[action.acquisition] += action.count
                assert shape is None or filled[action.acquisition] <= shape[0]
            elif isinstance(action, Finish):
                assert action.acquisition not in router.open
            else:
                assert isinstance(action, Drop | SeqGap)
    for name, state in router.open.items():
        assert state.next_index == filled[name]
