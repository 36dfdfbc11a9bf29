"""Defects that lost or corrupted data silently (issue 11), each against a real daemon."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgpack
import numpy as np
import pytest
import zmq

from framesink import Publisher, PublishError
from framesink.daemon._service import DRAIN_S
from framesink.transport import ControlClient

from ..helpers import (
    DaemonProcess,
    pattern,
    read_metadata,
    read_tiff,
    start_tyx,
    validate_ome,
    wait_for_status,
    wait_ready,
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


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_flood_of_rejected_messages_keeps_memory_and_the_log_bounded(
    start_daemon: StartDaemon,
) -> None:
    """Distinct-id starts beyond max_open, then frames for ids nobody started."""
    daemon = start_daemon(socket="pull", env={"FRAMESINK_MAX_OPEN": "2"})
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(daemon.ingest[0])

    def flood(first: int, count: int) -> None:
        for number in range(first, first + count):
            start = {
                "type": "start",
                "acquisition": f"flood-{number}",
                "seq": 0,
                "metadata": {"axes": "TYX"},
                "output": {"output_path": f"flood/{number}", "output_name": "f"},
                "dtype": "uint8",
                "frame_shape": [2, 2],
            }
            _raw(push, start)
            orphan = {"type": "frames", "acquisition": f"ghost-{number}", "seq": 1}
            _raw(push, orphan | {"index": 0, "count": 1}, bytes(4))

    def rejected() -> int:
        return sum(daemon.status().counters.rejected_by_reason.values())

    try:
        flood(0, 5_000)
        daemon.wait_for(lambda s: s.counters.messages == 10_000, timeout=60)
        rss_before, log_before = _rss_bytes(daemon.process.pid), daemon.log_path.stat().st_size
        flood(5_000, 60_000)
        daemon.wait_for(lambda s: s.counters.messages == 130_000, timeout=120)
    finally:
        push.close()
        context.term()
    assert rejected() == 130_000 - 2
    rss_growth = _rss_bytes(daemon.process.pid) - rss_before
    log_growth = daemon.log_path.stat().st_size - log_before
    assert rss_growth < 8 << 20, f"RSS grew {rss_growth >> 20} MiB for 120k rejections"
    assert log_growth < 64 << 10, f"log grew {log_growth} bytes for 120k rejections"
    assert daemon.stop() == 0
    log = daemon.log()
    logged = log.count("rejected message (orphan)")
    summarized = sum(map(int, re.findall(r"(\d+) more messages rejected \(orphan\)", log)))
    assert logged + summarized == 65_000
    assert daemon.log_path.stat().st_size - log_before < 64 << 10


SLOW_DISK_DAEMON = """
import sys, time
from framesink.daemon import Daemon, load_settings
from tests.helpers import DelegatingSink

class SlowDisk(DelegatingSink):
    '''A disk that takes one second per megabyte.'''

    def write(self, chunks):
        time.sleep(sum(chunk.frames.nbytes for chunk in chunks) / 1e6)
        super().write(chunks)

root, ingest, control = sys.argv[1:4]
settings = load_settings(None, data_root=root, socket="pull", bind=[ingest], control=control,
                         queue_bytes=1 << 20)
Daemon(settings, sink_factory=SlowDisk).run()
"""


def test_shutdown_on_a_slow_disk_stops_intake_and_is_bounded(tmp_path: Path) -> None:
    """SIGTERM while a publisher keeps sending into a full queue at 1 MB/s."""
    root, ingest, control = tmp_path / "root", f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/ctl"
    frame_shape = (512, 512)
    frame_bytes = 512 * 512 * 2
    with subprocess.Popen(
        [sys.executable, "-c", SLOW_DISK_DAEMON, str(root), ingest, control],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "FRAMESINK_CONFIG": ""},
    ) as process:
        wait_ready(process, control, tmp_path / "no-log")
        client = ControlClient(control)
        sending = threading.Event()
        sending.set()

        def camera() -> None:
            with Publisher(
                ingest, kind="push", control=control, send_timeout=1.0, high_water_mark=8
            ) as publisher:
                run = start_tyx(
                    publisher,
                    "slow",
                    output_path="slow",
                    output_name="s",
                    dtype="uint16",
                    frame_shape=frame_shape,
                )
                frame = pattern(1, frame_shape, "uint16")
                while sending.is_set():
                    with contextlib.suppress(PublishError):
                        run.send(frame)

        publisher = threading.Thread(target=camera)
        publisher.start()
        try:
            before = wait_for_status(
                client, lambda s: s.counters.frames_written >= 4, 30, lambda: ""
            ).counters
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
            took = time.monotonic() - signalled
        finally:
            sending.clear()
            publisher.join(30)
    record = read_metadata(root / "slow")["framesink"]
    taken_after = record["frames_written"] - before.frames_written
    # Intake for DRAIN_S (at disk speed, as the queue is full), then the queue is written.
    bound = (DRAIN_S * 1e6 + 3 * (1 << 20)) / frame_bytes
    assert taken_after <= bound, f"{taken_after} frames taken in after SIGTERM"
    assert took < DRAIN_S + 3 * (1 << 20) / 1e6 + 10, f"shutdown took {took:.1f} s"
    assert record["reason"] == "shutdown"
    assert (
        record["frames_written"] + record["frames_missing"]
        == read_tiff(root / "slow" / "s.ome.tiff")[1].shape[0]
    )
