"""A live daemon under a barrage of bad messages while a valid acquisition runs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from framesink import Publisher

from ..helpers import DaemonProcess, pattern, read_metadata, read_tiff, validate_ome

FRAME_SHAPE = (24, 16)


def _pack(header: Any, **options: Any) -> bytes:
    packed: bytes = msgpack.packb(header, use_bin_type=True, **options)
    return packed


def _start(acquisition: str, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "v": 1,
        "type": "start",
        "acquisition": acquisition,
        "seq": 0,
        "metadata": {"axes": "TYX"},
        "output": {"output_path": f"bad/{acquisition}", "output_name": "x"},
        "dtype": "uint8",
        "frame_shape": [4, 4],
    }
    header.update(changes)
    return header


def _frames(acquisition: str, seq: int, index: int, count: int, **changes: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "frames",
        "acquisition": acquisition,
        "seq": seq,
        "index": index,
        "count": count,
        **changes,
    }


def bad_messages(outside: Path) -> tuple[list[list[bytes]], int, int]:
    """(messages, how many count as bad, how many as orphans)."""
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    ok_frame = bytes(16)
    bad: list[list[bytes]] = [
        [b"only-one-part"],
        [b"t", _pack(_start("p4")), b"", b"fourth"],
        [b"t", b"\xc1\xc1 not msgpack"],
        [b"t", _pack([1, 2, 3])],
        [b"t", _pack(42)],
        [b"t", _pack({**_start("v2"), "v": 2})],
        [b"t", _pack({k: v for k, v in _start("nov").items() if k != "v"})],
        [b"t", _pack({**_start("ty"), "type": "resume"})],
        [b"t", _pack({k: v for k, v in _start("noid").items() if k != "acquisition"})],
        [b"t", _pack(_start("../../etc"))],
        [b"t", _pack(_start("x" * 129))],
        [b"t", _pack({**_start("seqstr"), "seq": "0"})],
        [b"t", _pack({**_start("seq5"), "seq": 5})],
        [b"t", _pack({k: v for k, v in _start("noout").items() if k != "output"})],
        [b"t", _pack(_start("dt", dtype="complex128"))],
        [b"t", _pack(_start("ax", metadata={"axes": "XYT"}))],
        [b"t", _pack(_start("fs", frame_shape=[4, 4, 3]))],
        [b"t", _pack(_start("sh", metadata={"axes": "TCZYX"}, shape=[None, 2]))],
        [b"t", _pack(_start("huge", frame_shape=[1 << 30, 1 << 30]))],
        [b"t", _pack(_start("res", metadata={"axes": "TYX", "framesink": {"complete": True}}))],
        [b"t", _pack(_start("nan", metadata={"axes": "TYX", "gain": float("nan")}))],
        [b"t", _pack(_start("inf", frame_shape=[4, float("inf")]))],
        [b"t", _pack(_start("abs", output={"output_path": str(outside), "output_name": "x"}))],
        [
            b"t",
            _pack(_start("dots", output={"output_path": "a/../../outside", "output_name": "x"})),
        ],
        [b"t", _pack(_start("sep", output={"output_path": "ok", "output_name": "../x"}))],
        [b"t", _pack(_start("link", output={"output_path": "escape/deeper", "output_name": "x"}))],
        [b"t", _pack(_start("extra", colour="blue"))],
        [b"t", _pack(_start("deep", metadata={"axes": "TYX", "deep": deep}))],
        [
            b"t",
            _pack(
                _start("ts", metadata={"axes": "TYX", "when": msgpack.Timestamp(0, 0)}),
                datetime=False,
            ),
        ],
        [b"t", _pack(_start("big", metadata={"axes": "TYX", "blob": "z" * (80 << 10)}))],
        # a declared volume whose padding alone would fill the disk (and memory)
        [b"t", _pack(_start("vol40", metadata={"axes": "TZYX"}, shape=[None, 1 << 40]))],
        # names: over-long in bytes (would leave an empty folder), reserved, controls
        [b"t", _pack(_start("long", output={"output_path": "n/long", "output_name": "é" * 120}))],
        [
            b"t",
            _pack(
                _start("rsv", output={"output_path": "n/.framesink-recovery", "output_name": "x"})
            ),
        ],
        [
            b"t",
            _pack(_start("nl", output={"output_path": "n/nl", "output_name": "a\nINFO forged"})),
        ],
        [b"t", _pack(_start("c1", output={"output_path": "n/c1\x85", "output_name": "x"}))],
        [
            b"t",
            _pack(_start("bidi", output={"output_path": "n/bidi", "output_name": "x\u202eftt"})),
        ],
        [b"t", _pack(_frames("valid", 50, 100, 1)), bytes(7)],
        [b"t", _pack(_frames("valid", 51, 100, 1))],
        [b"t", _pack(_frames("valid", 52, 100, 0)), b""],
        [b"t", _pack(_frames("valid", 53, 100, 1 << 40)), ok_frame],
        [
            b"t",
            _pack(_frames("valid", 54, 100, 2, frame_metadata=[{}])),
            bytes(FRAME_SHAPE[0] * FRAME_SHAPE[1] * 2 * 2),
        ],
        [b"t", _pack(_frames("valid", 55, 1 << 40, 1)), bytes(FRAME_SHAPE[0] * FRAME_SHAPE[1] * 2)],
        [b"t", _pack(_start("valid"))],
        [b"t", _pack(_frames("valid", 1, 0, 1)), bytes(FRAME_SHAPE[0] * FRAME_SHAPE[1] * 2)],
        [b"t", _pack({"v": 1, "type": "abort", "acquisition": "valid", "seq": 60, "reason": 7})],
        [
            b"t",
            _pack(
                {
                    "v": 1,
                    "type": "stop",
                    "acquisition": "valid",
                    "seq": 61,
                    "metadata": {"axes": "ZYX"},
                }
            ),
        ],
        [
            b"t",
            _pack({"v": 1, "type": "stop", "acquisition": "valid", "seq": 62}),
            b"payload on a stop",
        ],
    ]
    orphans: list[list[bytes]] = [
        [b"t", _pack(_frames("ghost", 1, 0, 1)), ok_frame],
        [b"t", _pack({"v": 1, "type": "stop", "acquisition": "ghost", "seq": 2})],
    ]
    return bad + orphans, len(bad), len(orphans)


def test_bad_messages_never_disturb_a_valid_acquisition(
    start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "escape").mkdir(parents=True)
    (root / "escape" / "deeper").symlink_to(outside)
    absolute_target = Path(f"/tmp/framesink-must-not-exist-{uuid.uuid4()}")
    daemon = start_daemon(
        "--socket",
        "pull",
        data_root=root,
        env={"FRAMESINK_MAX_HEADER_BYTES": "64KiB", "FRAMESINK_MAX_MESSAGE_BYTES": "1MiB"},
    )
    messages, bad_count, orphan_count = bad_messages(outside)
    messages.append(
        [
            b"t",
            _pack(_start("abs2", output={"output_path": str(absolute_target), "output_name": "x"})),
        ]
    )
    bad_count += 1

    frames = pattern(40, FRAME_SHAPE, "uint16")
    context = zmq.Context()
    attacker = context.socket(zmq.PUSH)
    attacker.setsockopt(zmq.LINGER, 5000)
    attacker.connect(daemon.ingest[0])
    try:
        with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
            valid = publisher.start(
                "valid",
                {"axes": "TYX", "notes": "the one that matters"},
                output_path="good",
                output_name="good",
                dtype="uint16",
                frame_shape=FRAME_SHAPE,
            )
            valid.send(frames[:20], chunk=4)
            daemon.wait_for(lambda s: s.counters.frames_received >= 20)
            for message in messages:
                attacker.send_multipart(message)
            oversize = context.socket(zmq.PUSH)
            oversize.connect(daemon.ingest[0])
            oversize.send_multipart([b"t", _pack(_frames("valid", 70, 20, 1)), bytes(2 << 20)])
            daemon.wait_for(lambda s: s.counters.peer_disconnects >= 1)
            oversize.close(linger=0)
            daemon.wait_for(lambda s: s.counters.messages >= 1 + 5 + len(messages))
            valid.seq += 100
            valid.send(frames[20:], chunk=4)
            valid.stop(wait=30)
        entry = daemon.wait_finished("valid")
    finally:
        attacker.close()
        context.term()

    assert (
        entry.state,
        entry.complete,
        entry.frames_written,
        entry.frames_dropped,
    ) == ("finished", False, 40, 0)
    # The publisher skipped 100 seqs: messages were lost, so the record cannot claim
    # completeness even though every frame index arrived. Two of those seqs (50, 55)
    # arrived from the attacker and were refused for their content (payload_size,
    # gap_too_large): they are rejected messages, not lost ones.
    assert entry.messages_lost == 98
    kind, pixels, xml = read_tiff(root / "good/good.ome.tiff")
    assert kind == "ome"
    np.testing.assert_array_equal(pixels, frames)
    validate_ome(xml)
    record = read_metadata(root / "good")["framesink"]
    assert (record["complete"], record["messages_lost"], record["frames_missing"]) == (
        False,
        98,
        0,
    )

    status = daemon.status()
    counters = status.counters
    assert counters.bad_messages == bad_count, counters
    assert counters.orphan_messages == orphan_count
    assert counters.acquisitions_started == 1
    assert counters.seq_gaps == 98
    assert entry.rejected_messages >= 10
    assert set(counters.rejected_by_reason) >= {
        "bad_multipart",
        "not_msgpack",
        "header_not_map",
        "bad_version",
        "bad_type",
        "bad_start",
        "header_too_large",
        "payload_size",
        "missing_payload",
        "bad_frames",
        "gap_too_large",
        "volume_too_large",
        "duplicate_start",
        "seq_backwards",
        "bad_output",
        "bad_abort",
        "bad_stop",
        "unexpected_payload",
        "orphan",
    }
    assert status.recent_errors, "rejections must be visible in the status"
    log = daemon.log()
    assert "rejected message (bad_output) for link" in log
    assert "a\\nINFO forged" in log, "the newline in the name is escaped in the log"
    assert not any(line.startswith("INFO forged") for line in log.splitlines())
    assert list(outside.iterdir()) == []
    assert not absolute_target.exists()
    created = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert created == [
        "escape",
        "escape/deeper",
        "good",
        "good/good.ome.tiff",
        "good/metadata.json",
    ]
    assert daemon.stop() == 0
    assert os.path.exists(root / "good/good.ome.tiff")
