"""The wire codec: every header is validated before pixels are touched."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from framesink.core import (
    FramesHeader,
    StartHeader,
    decode,
    end_header,
    frames_header,
    pack_header,
    start_header,
)
from framesink.core._wire import WireError

START = start_header(
    "acq-1",
    metadata={"axes": "TYX", "notes": "n"},
    output_path="p",
    output_name="n",
    dtype="uint16",
    frame_shape=[4, 5],
)


def _decode_header(header: Any, payload: bytes | None = None) -> Any:
    parts = [b"topic", msgpack.packb(header, use_bin_type=True)]
    if payload is not None:
        parts.append(payload)
    return decode(parts)


def test_round_trip_of_every_message_type() -> None:
    start = decode([b"t", pack_header(START)])
    assert isinstance(start.header, StartHeader)
    assert start.header.layout().frame_bytes == 40
    frames = decode(
        [b"t", pack_header(frames_header("acq-1", 1, 0, 2, [{"delta_t": 0.1}, None])), b"\0" * 80]
    )
    assert isinstance(frames.header, FramesHeader)
    assert frames.payload is not None
    assert frames.payload.nbytes == 80
    assert (
        decode(
            [b"t", pack_header(end_header("stop", "acq-1", 2, {"metadata": {"notes": "x"}}))]
        ).header.type
        == "stop"
    )
    assert (
        decode([b"t", pack_header(end_header("abort", "acq-1", 3, {"reason": "why"}))]).header.type
        == "abort"
    )


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([b"only-topic"], "bad_multipart"),
        ([b"t", b"h", b"p", b"extra"], "bad_multipart"),
        ([b"t", b"\xc1"], "not_msgpack"),
        ([b"t", msgpack.packb([1, 2])], "header_not_map"),
        ([b"t", msgpack.packb({**START, "v": 2})], "bad_version"),
        ([b"t", msgpack.packb({**START, "type": "pause"})], "bad_type"),
        ([b"t", msgpack.packb({**START, "seq": 3})], "bad_start"),
        ([b"t", msgpack.packb({**START, "dtype": "complex64"})], "bad_start"),
        ([b"t", msgpack.packb({**START, "metadata": {"axes": "XY"}})], "bad_start"),
        (
            [b"t", msgpack.packb({**START, "metadata": {"axes": "TYX", "framesink": 1}})],
            "bad_start",
        ),
        (
            [b"t", msgpack.packb({**START, "metadata": {"axes": "TYX", "x": float("inf")}})],
            "bad_start",
        ),
        ([b"t", msgpack.packb({**START, "acquisition": "../etc"})], "bad_start"),
        ([b"t", msgpack.packb({**START, "unexpected": True})], "bad_start"),
        ([b"t", msgpack.packb({**START, "frame_shape": [4]})], "bad_start"),
        ([b"t", msgpack.packb({**START, "seq": True})], "bad_start"),
        ([b"t", pack_header(START), b"payload"], "unexpected_payload"),
        ([b"t", pack_header(frames_header("a", 1, 0, 1))], "missing_payload"),
        (
            [b"t", pack_header({**frames_header("a", 1, 0, 2), "frame_metadata": [{}]}), b""],
            "bad_frames",
        ),
        ([b"t", pack_header({**frames_header("a", 1, -1, 1)}), b""], "bad_frames"),
        ([b"t", pack_header({**frames_header("a", 1, 0, 0)}), b""], "bad_frames"),
        (
            [b"t", pack_header(end_header("stop", "a", 1, {"metadata": {"axes": "ZYX"}}))],
            "bad_stop",
        ),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(parts: list[bytes], reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode(parts)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_nested_and_oversize_headers_are_rejected() -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"k": deep}
    with pytest.raises(WireError, match="nested deeper"):
        _decode_header({**START, "metadata": {"axes": "TYX", "deep": deep}})
    with pytest.raises(WireError, match="not a valid msgpack"):
        decode([b"t", b"\x91" * 5000 + b"\xc0"])
    with pytest.raises(WireError) as caught:
        decode(
            [b"t", pack_header({**START, "metadata": {"axes": "TYX", "big": "x" * 100}})],
            max_header_bytes=64,
        )
    assert caught.value.reason == "header_too_large"


def test_extension_types_and_binary_metadata_are_refused() -> None:
    timestamp = msgpack.packb(
        {**START, "metadata": {"axes": "TYX", "when": msgpack.Timestamp(1, 0)}}, datetime=False
    )
    with pytest.raises(WireError, match="not a valid msgpack"):
        decode([b"t", timestamp])
    with pytest.raises(WireError, match="bytes, which is not JSON"):
        _decode_header({**START, "metadata": {"axes": "TYX", "blob": b"\x00"}})


def test_acquisition_id_is_kept_on_rejection_when_valid() -> None:
    with pytest.raises(WireError) as caught:
        _decode_header({**START, "dtype": "bool"})
    assert caught.value.acquisition == "acq-1"
