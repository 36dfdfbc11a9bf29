"""Defects that lost or corrupted data silently (issue 11), each against a real daemon."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgpack
import numpy as np
import pytest
import zmq

from framesink import Publisher

from ..helpers import (
    DaemonProcess,
    pattern,
    read_metadata,
    read_tiff,
    start_tyx,
    validate_ome,
)

StartDaemon = Callable[..., DaemonProcess]


def test_reusing_an_id_while_the_previous_run_finalizes_keeps_both(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(socket="pull")
    first, second = pattern(40, (128, 128), "uint16"), pattern(5, (128, 128), "uint16", 40)
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        run = start_tyx(
            publisher,
            "same",
            output_path="r",
            output_name="r",
            dtype="uint16",
            frame_shape=(128, 128),
        )
        run.send(first)
        run.stop()
        again = start_tyx(
            publisher,
            "same",
            output_path="r",
            output_name="r",
            dtype="uint16",
            frame_shape=(128, 128),
        )
        again.send(second)
        status = daemon.wait_for(lambda s: s.counters.frames_received == 45)
    assert [a.acquisition for a in status.acquisitions].count("same") == 2
    assert daemon.stop(signal.SIGTERM) == 0
    one, two = read_metadata(daemon.data_root / "r"), read_metadata(daemon.data_root / "r_1")
    assert (one["framesink"]["reason"], one["framesink"]["complete"]) == ("stop", True)
    assert (two["framesink"]["reason"], two["framesink"]["frames_written"]) == ("shutdown", 5)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "r/r.ome.tiff")[1], first)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "r_1/r.ome.tiff")[1], second)
    assert not list(daemon.data_root.rglob("*.partial"))


def test_the_stop_of_a_full_acquisition_delivers_its_metadata(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    frames = pattern(24, (8, 8), "uint8")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        acquisition = publisher.start(
            "full",
            {"axes": "TCZYX"},
            output_path="full",
            output_name="full",
            dtype="uint8",
            frame_shape=(8, 8),
            shape=[3, 2, 4],
        )
        acquisition.send(frames)
        entry = acquisition.stop({"notes": "done", "result": "good cells"}, wait=30)
    assert entry is not None
    assert (entry.state, entry.complete, entry.frames_written) == ("finished", True, 24)
    document = read_metadata(daemon.data_root / "full")
    assert (document["notes"], document["result"]) == ("done", "good cells")
    kind, pixels, xml = read_tiff(daemon.data_root / "full/full.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (3, 2, 4, 8, 8))
    annotation = validate_ome(xml).structured_annotations.map_annotations[0]
    assert {m.k: m.value for m in annotation.value.ms}["result"] == '"good cells"'
    counters = daemon.status().counters
    assert (counters.bad_messages, counters.late_messages, counters.rejected_by_reason) == (
        0,
        0,
        {},
    )


def _raw(socket: zmq.Socket[bytes], header: dict[str, Any], payload: bytes | None = None) -> None:
    socket.send_multipart(
        [b"t", msgpack.packb({"v": 1, **header}), *([payload] if payload else [])]
    )


def test_a_forged_seq_far_ahead_cannot_poison_an_acquisition(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    frames = pattern(25, (4, 4), "uint8")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    attacker = context.socket(zmq.PUSH)
    attacker.setsockopt(zmq.LINGER, 5000)
    attacker.connect(daemon.ingest[0])
    try:
        with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
            victim = start_tyx(
                publisher,
                "victim",
                output_path="v",
                output_name="v",
                dtype="uint8",
                frame_shape=(4, 4),
            )
            victim.send(frames[:5])
            daemon.wait_for(lambda s: s.counters.frames_received == 5)
            forged = {"type": "frames", "acquisition": "victim", "seq": 2**62, "index": 5}
            _raw(attacker, {**forged, "count": 3}, bytes(48))
            _raw(attacker, {"type": "stop", "acquisition": "victim", "seq": 2**62 + 1})
            daemon.wait_for(lambda s: s.counters.messages == 4)
            victim.send(frames[5:])
            entry = victim.stop(wait=30)
    finally:
        attacker.close()
        context.term()
    assert entry is not None
    assert (entry.complete, entry.frames_written, entry.messages_lost) == (True, 25, 0)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "v/v.ome.tiff")[1], frames)
    assert daemon.status().counters.rejected_by_reason == {"seq_too_far": 2}


def _send_steadily(
    publisher: Publisher, frames: np.ndarray[Any, Any], stop: threading.Event
) -> list[int]:
    """Start an acquisition and send one frame every 10 ms until ``stop``; return [sent]."""
    sent = [0]
    acquisition = start_tyx(
        publisher,
        "steady",
        output_path="s",
        output_name="s",
        dtype="uint16",
        frame_shape=(64, 64),
    )

    def run() -> None:
        while not stop.is_set() and sent[0] < len(frames):
            acquisition.send(frames[sent[0]])
            sent[0] += 1
            time.sleep(0.01)

    thread = threading.Thread(target=run)
    thread.start()
    stop.wait()
    thread.join()
    acquisition.stop(wait=60)
    return sent


def _stall(kind: Literal["pull", "sub"], start_daemon: StartDaemon) -> None:
    """Stop the daemon (SIGSTOP) longer than idle_timeout while the camera keeps sending."""
    daemon = start_daemon("--idle-timeout", "3", socket=kind)
    frames = pattern(2000, (64, 64), "uint16")
    stop = threading.Event()
    publisher_kind: Literal["push", "pub"] = "push" if kind == "pull" else "pub"
    with Publisher(
        daemon.ingest, kind=publisher_kind, control=daemon.control, high_water_mark=100_000
    ) as publisher:
        result: list[list[int]] = []
        sender = threading.Thread(
            target=lambda: result.append(_send_steadily(publisher, frames, stop))
        )
        sender.start()
        daemon.wait_for(lambda s: s.counters.frames_written >= 50)
        os.kill(daemon.process.pid, signal.SIGSTOP)
        time.sleep(5)
        os.kill(daemon.process.pid, signal.SIGCONT)
        time.sleep(1)
        stop.set()
        sender.join(60)
    (sent,) = result[0]
    record = read_metadata(daemon.data_root / "s")["framesink"]
    assert (record["reason"], record["error"]) == ("stop", None)
    assert record["frames_written"] + record["frames_missing"] == sent
    if kind == "pull":
        assert (record["complete"], record["frames_written"]) == (True, sent)
    np.testing.assert_array_equal(
        read_tiff(daemon.data_root / "s/s.ome.tiff")[1][: record["frames_written"]],
        frames[: record["frames_written"]],
    )
    assert "did not run for" in daemon.log()


def test_a_stall_longer_than_idle_timeout_does_not_end_a_live_acquisition(
    start_daemon: StartDaemon,
) -> None:
    _stall("pull", start_daemon)


@pytest.mark.slow
def test_a_stall_of_a_sub_daemon_does_not_end_a_live_acquisition(
    start_daemon: StartDaemon,
) -> None:
    _stall("sub", start_daemon)


def test_starts_that_send_nothing_give_their_slots_back(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(
        socket="pull", env={"FRAMESINK_MAX_OPEN": "2", "FRAMESINK_START_TIMEOUT": "1.5"}
    )
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        for name in ("idle1", "idle2", "refused"):
            start_tyx(
                publisher,
                name,
                output_path=name,
                output_name=name,
                dtype="uint8",
                frame_shape=(2, 2),
            )
        status = daemon.wait_for(lambda s: s.counters.messages == 3)
        holders = [(a.acquisition, a.idle_timeout) for a in status.acquisitions]
        assert holders == [("idle1", 60.0), ("idle2", 60.0)]
        assert all(a.idle_s is not None for a in status.acquisitions)
        (rejection,) = status.recent_errors
        assert "idle1, idle2" in rejection.detail
        daemon.wait_for(lambda s: s.counters.acquisitions_finished == 2, timeout=10)
        later = start_tyx(
            publisher,
            "later",
            output_path="later",
            output_name="later",
            dtype="uint8",
            frame_shape=(2, 2),
        )
        later.send(pattern(3, (2, 2), "uint8"))
        entry = later.stop(wait=30)
    assert entry is not None
    assert (entry.complete, entry.frames_written) == (True, 3)
    assert read_metadata(daemon.data_root / "idle1")["framesink"]["reason"] == "timeout"


def test_a_time_lapse_slower_than_idle_timeout_asks_for_its_own(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon("--idle-timeout", "0.5", socket="pull")
    frames = pattern(3, (8, 8), "uint16")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        lapse = publisher.start(
            "lapse",
            {"axes": "TYX"},
            output_path="lapse",
            output_name="lapse",
            dtype="uint16",
            frame_shape=(8, 8),
            idle_timeout=3,
        )
        for frame in frames:
            lapse.send(frame)
            time.sleep(1.0)
        entry = lapse.stop(wait=30)
    assert entry is not None
    assert (entry.reason, entry.complete, entry.frames_written) == ("stop", True, 3)
    header = json.loads((daemon.data_root / "lapse/metadata.json").read_text())
    assert header["framesink"]["frames_written"] == 3


def test_a_raw_publisher_that_loses_messages_gets_an_incomplete_record(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Lost messages at the tail of a stop without frame_count are not silent."""
    daemon = start_daemon(socket="pull")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(daemon.ingest[0])
    try:
        start = {
            "type": "start",
            "acquisition": "lossy",
            "seq": 0,
            "metadata": {"axes": "TYX"},
            "output": {"output_path": "lossy", "output_name": "l"},
            "dtype": "uint8",
            "frame_shape": [2, 2],
        }
        _raw(push, start)
        for seq in (1, 2, 3):
            _raw(
                push,
                {
                    "type": "frames",
                    "acquisition": "lossy",
                    "seq": seq,
                    "index": seq - 1,
                    "count": 1,
                },
                bytes(4),
            )
        _raw(push, {"type": "stop", "acquisition": "lossy", "seq": 7})
        entry = daemon.wait_finished("lossy")
    finally:
        push.close()
        context.term()
    assert (entry.complete, entry.frames_written, entry.messages_lost) == (False, 3, 3)
    assert read_metadata(daemon.data_root / "lossy")["framesink"]["messages_lost"] == 3


def test_a_folder_swapped_for_a_link_while_starts_arrive_writes_nothing_outside(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    daemon = start_daemon(socket="pull", data_root=root)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            # The daemon creates and removes exp too: whoever loses a step tries again.
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                (root / "exp").mkdir(exist_ok=True)
                os.rename(root / "exp", root / f"parked-{time.monotonic_ns()}")
                (root / "exp").symlink_to(outside)
                (root / "exp").unlink()

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
            for number in range(300):
                run = start_tyx(
                    publisher,
                    f"race{number}",
                    output_path="exp/run",
                    output_name="cam",
                    dtype="uint8",
                    frame_shape=(2, 2),
                )
                run.send(pattern(1, (2, 2), "uint8"))
                run.stop()
            daemon.wait_for(lambda s: s.counters.messages == 900, timeout=60)
    finally:
        stop.set()
        swapper.join()
    daemon.wait_for(lambda s: not any(a.state == "open" for a in s.acquisitions), timeout=60)
    assert list(outside.rglob("*")) == []
    written = sorted(root.rglob("cam.ome.tiff"))
    refused = daemon.status().counters.rejected_by_reason.get("bad_output", 0)
    assert len(written) + refused == 300
    assert written, "some starts must have found the real folder"
