"""System tests: a real `framesink serve` process, real sockets, real files."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from framesink import MetaData, Publisher, PublishError

from ..helpers import (
    DaemonProcess,
    frames_parts,
    pattern,
    read_metadata,
    read_tiff,
    run_framesink,
    start_parts,
    start_tyx,
    validate_ome,
)

StartDaemon = Callable[..., DaemonProcess]


def test_two_interleaved_acquisitions_with_different_dtypes_and_axes(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon()
    a_frames = pattern(6, (16, 12), "uint16")
    b_frames = pattern(2 * 2 * 3, (8, 10), "float32")
    with Publisher(daemon.ingest, control=daemon.control, kind="pub") as publisher:
        a = publisher.start(
            "run-a",
            MetaData(axes="TYX", notes="first", lens="10x"),
            output_path="exp/a",
            output_name="cells",
            dtype="uint16",
            frame_shape=(16, 12),
        )
        b = publisher.start(
            "run-b",
            {"axes": "TCZYX", "channel_names": ["GFP", "RFP"]},
            output_path="exp/b",
            output_name="vol",
            dtype="float32",
            frame_shape=(8, 10),
            shape=[None, 2, 3],
        )
        for step in range(6):
            a.send(a_frames[step], [{"delta_t": step * 0.5, "exposure_time": 0.02, "temp": 21.5}])
            b.send(b_frames[2 * step : 2 * step + 2])
        a.stop({"notes": "final notes", "operator": "ada"}, wait=30)
        b.stop(wait=30)
    a_entry = daemon.wait_finished("run-a")
    b_entry = daemon.wait_finished("run-b")
    assert (a_entry.state, a_entry.complete, a_entry.frames_written) == (
        "finished",
        True,
        6,
    )
    assert (b_entry.state, b_entry.complete, b_entry.frames_written) == (
        "finished",
        True,
        12,
    )

    a_folder, b_folder = daemon.data_root / "exp/a", daemon.data_root / "exp/b"
    kind, pixels, xml = read_tiff(a_folder / "cells.ome.tiff")
    assert kind == "ome"
    np.testing.assert_array_equal(pixels, a_frames)
    planes = validate_ome(xml).images[0].pixels.planes
    assert [p.delta_t for p in planes] == [step * 0.5 for step in range(6)]
    assert all(p.exposure_time == 0.02 for p in planes)
    sidecar = [
        json.loads(line) for line in (a_folder / "cells.frames.jsonl").read_text().splitlines()
    ]
    assert [entry["temp"] for entry in sidecar] == [21.5] * 6
    document = read_metadata(a_folder)
    assert (document["notes"], document["operator"], document["lens"]) == (
        "final notes",
        "ada",
        "10x",
    )
    assert document["framesink"]["reason"] == "stop"

    kind, pixels, xml = read_tiff(b_folder / "vol.ome.tiff")
    assert (kind, pixels.shape, pixels.dtype) == ("ome", (2, 2, 3, 8, 10), np.float32)
    np.testing.assert_array_equal(pixels.reshape(12, 8, 10), b_frames)
    assert [c.name for c in validate_ome(xml).images[0].pixels.channels] == ["GFP", "RFP"]
    assert daemon.stop() == 0


def _raw_header(**fields: Any) -> bytes:
    packed: bytes = msgpack.packb({"v": 1, **fields}, use_bin_type=True)
    return packed


def test_raw_pyzmq_publisher_over_push_pull(start_daemon: StartDaemon) -> None:
    """Only pyzmq and msgpack, as a publisher in another language would do it."""
    daemon = start_daemon("--socket", "pull")
    frames = pattern(5, (4, 6, 3), "uint8")
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(daemon.ingest[0])
    start = _raw_header(
        type="start",
        acquisition="raw.1",
        seq=0,
        metadata={"axes": "TYXS", "instrument": "rgb-cam"},
        output={"output_path": "raw", "output_name": "rgb"},
        dtype="uint8",
        frame_shape=[4, 6, 3],
    )
    push.send_multipart([b"cam0", start])
    push.send_multipart(
        [
            b"cam0",
            _raw_header(type="frames", acquisition="raw.1", seq=1, index=0, count=2),
            frames[:2].tobytes(),
        ]
    )
    push.send_multipart(
        [
            b"cam0",
            _raw_header(type="frames", acquisition="raw.1", seq=2, index=2, count=3),
            frames[2:].tobytes(),
        ]
    )
    push.send_multipart([b"cam0", _raw_header(type="stop", acquisition="raw.1", seq=3)])
    push.close()
    context.term()
    entry = daemon.wait_finished("raw.1")
    assert entry.complete is True
    kind, pixels, xml = read_tiff(daemon.data_root / "raw/rgb.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (5, 4, 6, 3))
    np.testing.assert_array_equal(pixels, frames)
    assert validate_ome(xml).images[0].pixels.channels[0].samples_per_pixel == 3


def test_daemon_connects_to_a_binding_publisher(start_daemon: StartDaemon, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/camera"
    with Publisher(endpoint, kind="pub", bind=True) as publisher:
        daemon = start_daemon("--connect", endpoint, bind=[])
        acquisition = publisher.start(
            "conn",
            {"axes": "ZYX"},
            output_path="c",
            output_name="z",
            dtype="int16",
            frame_shape=(5, 5),
            shape=[4],
        )
        acquisition.send(pattern(4, (5, 5), "int16"), chunk=3)
        acquisition.stop()  # a full bounded shape still ends with its stop
        entry = daemon.wait_finished("conn")
    assert (entry.complete, entry.reason, entry.frames_written) == (True, "stop", 4)
    _, pixels, _ = read_tiff(daemon.data_root / "c/z.ome.tiff")
    np.testing.assert_array_equal(pixels, pattern(4, (5, 5), "int16"))


def test_sigterm_finalizes_open_acquisition_and_exits_zero(start_daemon: StartDaemon) -> None:
    daemon = start_daemon("--socket", "pull")
    frames = pattern(7, (32, 32), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        acquisition = start_tyx(
            publisher,
            "open-one",
            output_path="s",
            output_name="s",
            dtype="uint16",
            frame_shape=(32, 32),
        )
        acquisition.send(frames)
    daemon.wait_for(lambda s: s.counters.frames_received == 7)
    assert daemon.stop(signal.SIGTERM) == 0
    folder = daemon.data_root / "s"
    record = read_metadata(folder)["framesink"]
    assert (record["reason"], record["complete"], record["frames_written"]) == (
        "shutdown",
        False,
        7,
    )
    _, pixels, _ = read_tiff(folder / "s.ome.tiff")
    np.testing.assert_array_equal(pixels, frames)
    assert not (folder / "s.ome.tiff.partial").exists()


def test_sigint_also_drains(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    assert daemon.stop(signal.SIGINT) == 0
    assert "stopped" in daemon.log()


def test_ready_notification_on_notify_socket(start_daemon: StartDaemon, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(30)
        daemon = start_daemon(env={"NOTIFY_SOCKET": path})
        assert listener.recv(4096).decode().splitlines()[0] == "READY=1"
        assert daemon.stop() == 0
        assert listener.recv(4096).decode() == "STOPPING=1"


def test_status_command_human_and_json(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with Publisher(daemon.ingest, control=daemon.control) as publisher:
        acquisition = start_tyx(
            publisher,
            "shown",
            output_path="st",
            output_name="st",
            dtype="uint8",
            frame_shape=(4, 4),
        )
        acquisition.send(pattern(3, (4, 4), "uint8"))
        daemon.wait_for(lambda s: s.counters.frames_written == 3)
        shown = run_framesink("status", "--control", daemon.control, timeout=30)
        assert shown.returncode == 0, shown.stderr
        human = shown.stdout
        assert "shown" in human
        assert "open" in human
        assert "ACQUISITION" in human
        # the endpoint comes from the environment, as for `framesink serve`
        printed = run_framesink(
            "status",
            "--json",
            timeout=30,
            env={"FRAMESINK_CONFIG": "", "FRAMESINK_CONTROL": daemon.control},
        )
        assert printed.returncode == 0, printed.stderr
        raw = printed.stdout
        status = json.loads(raw)
        entry = status["acquisitions"][0]
        assert {
            k: entry[k]
            for k in ("acquisition", "state", "frames_written", "frames_missing", "complete")
        } == {
            "acquisition": "shown",
            "state": "open",
            "frames_written": 3,
            "frames_missing": 0,
            "complete": False,
        }
        for key in (
            "messages",
            "bad_messages",
            "orphan_messages",
            "frames_written",
            "frames_dropped",
        ):
            assert key in status["counters"]
        assert status["uptime_s"] > 0
        acquisition.stop(wait=30)
    daemon.wait_finished("shown")


def test_status_command_reports_an_absent_daemon(tmp_path: Path) -> None:
    result = run_framesink(
        "status", "--control", f"ipc://{tmp_path}/nobody", "--timeout", "0.5", timeout=30
    )
    assert result.returncode == 1
    assert "no answer" in result.stderr


def test_control_endpoint_answers_garbage_and_keeps_working(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    context = zmq.Context()
    try:
        for payload in [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"cmd": "reboot"})]:
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(daemon.control)
            sock.send(payload)
            reply = msgpack.unpackb(sock.recv())
            assert reply["ok"] is False
            assert reply["error"]
            sock.close()
    finally:
        context.term()
    assert daemon.status().ok is True


@pytest.mark.parametrize("reason", ["abort", "timeout"])
def test_abort_and_idle_timeout_end_incomplete(start_daemon: StartDaemon, reason: str) -> None:
    daemon = start_daemon("--idle-timeout", "0.5")
    with Publisher(daemon.ingest, control=daemon.control) as publisher:
        acquisition = start_tyx(
            publisher, "ending", output_path="e", output_name="e", dtype="uint8", frame_shape=(4, 4)
        )
        acquisition.send(pattern(2, (4, 4), "uint8"))
        if reason == "abort":
            acquisition.abort("operator pressed stop", wait=30)
        entry = daemon.wait_finished("ending")
    assert (entry.reason, entry.complete, entry.frames_written) == (reason, False, 2)
    document = read_metadata(daemon.data_root / "e")
    assert document["framesink"]["reason"] == reason
    if reason == "abort":
        assert document["abort_reason"] == "operator pressed stop"


def test_sub_overload_records_what_could_not_be_kept(start_daemon: StartDaemon) -> None:
    """A tiny queue and a publisher that never waits: every frame is written or listed missing."""
    daemon = start_daemon("--queue-bytes", "64KiB", "--fsync-interval", "0.001")
    total = 600
    frames = pattern(total, (128, 128), "uint16")
    with Publisher(
        daemon.ingest, control=daemon.control, kind="pub", high_water_mark=100_000
    ) as publisher:
        acquisition = start_tyx(
            publisher,
            "flood",
            output_path="flood",
            output_name="f",
            dtype="uint16",
            frame_shape=(128, 128),
        )
        acquisition.send(frames, chunk=1)
        acquisition.stop(wait=60)
    entry = daemon.wait_finished("flood", timeout=60)
    record = read_metadata(daemon.data_root / "flood")["framesink"]
    assert record["frames_written"] + record["frames_missing"] == total
    assert record["frames_missing"] > 0, "the queue never overflowed; the test proves nothing"
    assert entry.frames_missing == record["frames_missing"]
    _, pixels, _ = read_tiff(daemon.data_root / "flood/f.ome.tiff")
    missing = np.zeros(total, bool)
    for first, last in record["missing_ranges"]:
        missing[first : last + 1] = True
    assert missing.sum() == record["frames_missing"]
    np.testing.assert_array_equal(pixels[~missing], frames[~missing])
    assert not pixels[missing].any()
    counters = daemon.status().counters
    assert counters.frames_lost_overload > 0
    assert counters.frames_lost_overload <= record["frames_missing"]


def test_stop_wait_confirms_delivery_when_the_daemon_is_behind(start_daemon: StartDaemon) -> None:
    """ZeroMQ can drop queued messages when a socket closes; stop(wait=) closes only after the ack."""
    daemon = start_daemon(
        "--socket", "pull", "--queue-bytes", "4KiB", env={"FRAMESINK_RECEIVE_HWM": "1"}
    )
    frames = pattern(300, (8, 8), "uint8")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        acquisition = start_tyx(
            publisher, "behind", output_path="b", output_name="b", dtype="uint8", frame_shape=(8, 8)
        )
        acquisition.send(frames, [{"delta_t": i * 0.01} for i in range(300)], chunk=1)
        entry = acquisition.stop(wait=60)
    assert entry is not None
    assert (entry.state, entry.complete, entry.frames_written) == ("finished", True, 300)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "b/b.ome.tiff")[1], frames)


def test_control_endpoint_survives_clients_that_vanish(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    context = zmq.Context()
    try:
        for _ in range(20):
            impatient = context.socket(zmq.REQ)
            impatient.setsockopt(zmq.LINGER, 0)
            impatient.connect(daemon.control)
            impatient.send(msgpack.packb({"cmd": "status"}))
            impatient.close()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(daemon.control)
        dealer.send(msgpack.packb({"cmd": "ping"}))  # no REQ envelope: ignored, not fatal
        dealer.close()
    finally:
        context.term()
    assert daemon.status().ok is True
    assert daemon.status().counters.messages == 0


def test_json_log_lines(start_daemon: StartDaemon) -> None:
    daemon = start_daemon("--log-format", "json")
    assert daemon.stop() == 0
    entries = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any("ready" in entry["message"] for entry in entries)
    assert entries[-1]["message"] == "framesink stopped"


def test_topic_filter(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(env={"FRAMESINK_SUBSCRIBE": '["cam1"]'})
    with (
        Publisher(daemon.ingest, topic="cam2", control=daemon.control) as ignored,
        pytest.raises(PublishError, match="no subscriber for topic b'cam2'"),
    ):
        start_tyx(
            ignored,
            "nobody",
            output_path="x",
            output_name="x",
            dtype="uint8",
            frame_shape=(2, 2),
            subscriber_timeout=1,
        )
    with Publisher(daemon.ingest, topic="cam1-left", control=daemon.control) as heard:
        acquisition = start_tyx(
            heard, "heard", output_path="h", output_name="h", dtype="uint8", frame_shape=(2, 2)
        )
        acquisition.send(pattern(2, (2, 2), "uint8"))
        entry = acquisition.stop(wait=30)
    assert entry is not None
    assert entry.frames_written == 2
    assert daemon.status().counters.messages == 3  # nothing from cam2 arrived


def test_sigterm_under_backpressure_finalizes_every_acquisition(start_daemon: StartDaemon) -> None:
    """Four acquisitions, a 1 MiB queue (the daemon is behind), SIGTERM mid-stream."""
    daemon = start_daemon("--socket", "pull", "--queue-bytes", "1MiB")
    frames = pattern(40, (256, 256), "uint16")
    names = [f"busy{number}" for number in range(4)]
    with Publisher(daemon.ingest, kind="push", send_timeout=5) as publisher:
        handles = [
            start_tyx(
                publisher,
                name,
                output_path=name,
                output_name=name,
                dtype="uint16",
                frame_shape=(256, 256),
            )
            for name in names
        ]
        for index in range(20):
            for handle in handles:
                handle.send(frames[index])
        daemon.wait_for(lambda s: s.counters.frames_written >= 8)
        assert daemon.stop(signal.SIGTERM) == 0
    for name in names:
        record = read_metadata(daemon.data_root / name)["framesink"]
        assert (record["reason"], record["error"]) == ("shutdown", None)
        kind, pixels, _ = read_tiff(daemon.data_root / name / f"{name}.ome.tiff")
        assert kind == "ome"
        written = record["frames_written"]
        assert written >= 1
        np.testing.assert_array_equal(pixels.reshape(-1, 256, 256)[:written], frames[:written])
        assert not (daemon.data_root / name / "framesink-journal.jsonl").exists()


@pytest.mark.parametrize(("flags", "direct"), [((), True), (("--no-direct-io",), False)])
def test_direct_io_is_on_by_default_and_can_be_turned_off(
    start_daemon: StartDaemon, flags: tuple[str, ...], direct: bool
) -> None:
    daemon = start_daemon("--socket", "pull", *flags)
    frames = pattern(9, (64, 64), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        acquisition = start_tyx(
            publisher, "d", output_path="d", output_name="d", dtype="uint16", frame_shape=(64, 64)
        )
        acquisition.send(frames[:4], chunk=4)
        acquisition.send(frames[4:], chunk=1)
        entry = acquisition.stop(wait=30)
    assert entry is not None
    assert (entry.complete, entry.direct_io) == (True, direct)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "d/d.ome.tiff")[1], frames)


def test_a_refused_start_is_answerable_by_its_id_from_any_language(
    start_daemon: StartDaemon,
) -> None:
    """Operating, item 5: a refused start was invisible to its publisher."""
    daemon = start_daemon(socket="pull")
    with zmq.Context() as context, context.socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(daemon.ingest[0])
        push.send_multipart(start_parts("refused", output_path="/absolute"))
        push.send_multipart(frames_parts("refused", 1, 0, 1, frame_bytes=32))
    daemon.wait_for(lambda s: s.counters.orphan_messages == 1)
    with zmq.Context() as context, context.socket(zmq.REQ) as request:
        request.setsockopt(zmq.RCVTIMEO, 5000)
        request.connect(daemon.control)
        request.send(msgpack.packb({"cmd": "status", "acquisition": "refused"}))
        reply = msgpack.unpackb(request.recv())
    assert reply["ok"] is True
    entry = reply["acquisition"]
    assert (entry["state"], entry["refusal"]) == ("refused", "bad_output")
    assert "must be relative to the data root" in entry["error"]
    assert daemon.client.acquisition("never") is None

    with (
        Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher,
        pytest.raises(PublishError, match="refused acquisition 'again': bad_output"),
    ):
        publisher.start(
            "again", {"axes": "TYX"}, output_path="/abs", output_name="x",
            dtype="uint8", frame_shape=(4, 4), confirm=True,
        )  # fmt: skip


def test_stop_wait_says_what_really_happened(start_daemon: StartDaemon) -> None:
    """Operating, item 5: stop(wait=10) waited 10 s and said only "did not finish"."""
    import time

    daemon = start_daemon(socket="pull")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        refused = publisher.start(
            "nowhere", {"axes": "TYX"}, output_path="/abs", output_name="x",
            dtype="uint8", frame_shape=(4, 4),
        )  # fmt: skip
        began = time.monotonic()
        with pytest.raises(PublishError, match="refused acquisition 'nowhere' at its start"):
            refused.stop(wait=10)
        assert time.monotonic() - began < 5

        running = start_tyx(publisher, "alive", dtype="uint8", frame_shape=(4, 4))
        running.send(pattern(2, (4, 4), "uint8"))
        daemon.wait_for(lambda s: (e := s.entry("alive")) is not None and e.frames_written == 2)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(10)
        with pytest.raises(PublishError, match=r"stopped answering .* \(after \d+\.\d s\)"):
            running.stop(wait=2)


def test_a_push_publisher_against_a_sub_daemon_is_told_why(start_daemon: StartDaemon) -> None:
    """Operating, item 7: it timed out and nothing suggested --socket pull."""
    daemon = start_daemon()  # SUB, the default
    with (
        Publisher(daemon.ingest, kind="push", control=daemon.control, send_timeout=2) as pub,
        pytest.raises(PublishError, match=r"daemon's ingest socket is SUB.*--socket pull"),
    ):
        pub.start(
            "mismatch", {"axes": "TYX"}, output_path="m", output_name="m",
            dtype="uint8", frame_shape=(4, 4), confirm=True, confirm_timeout=1.0,
        )  # fmt: skip
