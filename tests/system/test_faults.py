"""Failure paths that could lose data: disk full, SIGKILL, taken folders, gaps, low disk."""

from __future__ import annotations

import functools
import os
import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from framesink import AcquisitionEntry, DaemonStatus, Publisher

from ..helpers import (
    DaemonProcess,
    mounted_tmpfs,
    pattern,
    read_metadata,
    read_tiff,
    run_framesink,
    start_tyx,
    validate_ome,
)

StartDaemon = Callable[..., DaemonProcess]
FILE_SIZE_LIMIT = 4 << 20


def _written_at_least(frames: int, status: DaemonStatus) -> bool:
    return bool(status.counters.frames_written >= frames)


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _limit_file_size() -> None:
    """In the daemon child: files may not grow past FILE_SIZE_LIMIT (a full disk, per file)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_disk_full_fails_one_acquisition_while_another_completes(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull", preexec_fn=_limit_file_size)
    big = pattern(60, (256, 256), "uint16")
    small = pattern(10, (16, 16), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        filling = start_tyx(
            publisher,
            "filling",
            output_path="full",
            output_name="big",
            dtype="uint16",
            frame_shape=(256, 256),
        )
        other = start_tyx(
            publisher,
            "other",
            output_path="fine",
            output_name="small",
            dtype="uint16",
            frame_shape=(16, 16),
        )
        for index in range(60):
            filling.send(big[index])
            if index < 10:
                other.send(small[index])
        other.stop(wait=30)
        filling.stop(wait=30)
    failed = daemon.wait_finished("filling")
    fine = daemon.wait_finished("other")
    assert (fine.state, fine.complete, fine.frames_written) == ("finished", True, 10)
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "fine/small.ome.tiff")[1], small)

    assert failed.state == "failed"
    assert failed.error is not None
    assert "file too large" in failed.error or "probably full" in failed.error
    record = read_metadata(daemon.data_root / "full")["framesink"]
    assert (record["reason"], record["complete"]) == ("error", False)
    assert record["error"] == failed.error
    written = record["frames_written"]
    assert 20 < written < 60
    kind, pixels, xml = read_tiff(daemon.data_root / "full" / record["files"]["tiff"])
    assert kind == "ome"
    np.testing.assert_array_equal(pixels, big[:written])
    validate_ome(xml)
    daemon.wait_for(lambda s: s.counters.acquisitions_failed == 1)
    assert "write failed" in daemon.log()
    assert daemon.stop() == 0


def test_sigkill_then_restart_recovers_every_frame(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    daemon = start_daemon("--socket", "pull", data_root=root)
    frames = pattern(50, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        acquisition = publisher.start(
            "crash",
            {"axes": "TZYX", "notes": "kept"},
            output_path="crash",
            output_name="c",
            dtype="uint16",
            frame_shape=(64, 48),
            shape=[None, 4],
        )
        acquisition.send(frames[:30], [{"delta_t": i * 0.1} for i in range(30)], chunk=3)
        acquisition.send(frames[33:50], index=33)
        daemon.wait_for(lambda s: s.counters.frames_written == 47)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    assert (root / "crash/c.ome.tiff.partial").exists()

    restarted = start_daemon(data_root=root)
    restarted.wait_for(lambda s: not s.recovering)
    assert "recovered interrupted acquisition crash" in restarted.log()
    record = read_metadata(root / "crash")
    assert record["notes"] == "kept"
    info = record["framesink"]
    assert (info["reason"], info["complete"], info["frames_written"]) == ("recovered", False, 47)
    assert info["missing_ranges"] == [[30, 32], [50, 51]]
    kind, pixels, xml = read_tiff(root / "crash/c.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (13, 4, 64, 48))
    flat = pixels.reshape(52, 64, 48)
    np.testing.assert_array_equal(flat[:30], frames[:30])
    np.testing.assert_array_equal(flat[33:50], frames[33:50])
    assert not flat[30:33].any()
    assert len(validate_ome(xml).images[0].pixels.planes) == 30
    assert not (root / "crash/c.ome.tiff.partial").exists()
    assert restarted.stop() == 0


def _run_one(
    daemon: DaemonProcess, name: str, kind: Literal["pub", "push"] = "pub"
) -> AcquisitionEntry:
    with Publisher(daemon.ingest, control=daemon.control, kind=kind) as publisher:
        acquisition = start_tyx(
            publisher,
            name,
            output_path="same",
            output_name="img",
            dtype="uint8",
            frame_shape=(4, 4),
        )
        acquisition.send(pattern(2, (4, 4), "uint8"))
        acquisition.stop(wait=30)
    return daemon.wait_finished(name)


def test_increment_policy_never_overwrites(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    first = _run_one(daemon, "one")
    before = (daemon.data_root / "same/img.ome.tiff").read_bytes()
    second = _run_one(daemon, "two")
    third = _run_one(daemon, "three")
    assert (first.path, second.path, third.path) == (
        str(daemon.data_root / "same/img.ome.tiff"),
        str(daemon.data_root / "same_1/img.ome.tiff"),
        str(daemon.data_root / "same_2/img.ome.tiff"),
    )
    assert (daemon.data_root / "same/img.ome.tiff").read_bytes() == before
    assert read_metadata(daemon.data_root / "same_1")["framesink"]["acquisition"] == "two"


def test_error_policy_rejects_a_taken_folder(start_daemon: StartDaemon) -> None:
    daemon = start_daemon("--on-exists", "error")
    _run_one(daemon, "one")
    before = (daemon.data_root / "same/metadata.json").read_text()
    with Publisher(daemon.ingest, control=daemon.control) as publisher:
        acquisition = start_tyx(
            publisher,
            "two",
            output_path="same",
            output_name="img",
            dtype="uint8",
            frame_shape=(4, 4),
        )
        acquisition.send(pattern(1, (4, 4), "uint8"))
        status = daemon.wait_for(lambda s: s.counters.acquisitions_rejected == 1)
    assert status.counters.rejected_by_reason["bad_output"] == 1
    (rejection,) = [e for e in status.recent_errors if e.reason == "bad_output"]
    assert "already holds" in rejection.detail
    assert rejection.acquisition == "two"
    daemon.wait_for(lambda s: s.counters.orphan_messages == 1)  # the start never was
    assert (daemon.data_root / "same/metadata.json").read_text() == before
    assert not (daemon.data_root / "same_1").exists()


def test_gaps_are_zero_filled_and_recorded(start_daemon: StartDaemon) -> None:
    daemon = start_daemon("--socket", "pull")
    frames = pattern(20, (8, 8), "int32")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        acquisition = start_tyx(
            publisher, "gappy", output_path="g", output_name="g", dtype="int32", frame_shape=(8, 8)
        )
        acquisition.send(frames[0:5])
        acquisition.send(frames[8:12], index=8)
        acquisition.send(frames[10:11], index=10)
        acquisition.send(frames[15:18], index=15)
        acquisition.next_index = 20
        acquisition.stop(wait=30)
    entry = daemon.wait_finished("gappy")
    record = read_metadata(daemon.data_root / "g")["framesink"]
    assert record["missing_ranges"] == [[5, 7], [12, 14], [18, 19]]
    assert (record["frames_written"], record["frames_missing"], record["frames_dropped"]) == (
        12,
        8,
        1,
    )
    assert (entry.frames_missing, entry.frames_dropped, entry.complete) == (8, 1, False)
    _, pixels, _ = read_tiff(daemon.data_root / "g/g.ome.tiff")
    expected = frames.copy()
    for first, last in record["missing_ranges"]:
        expected[first : last + 1] = 0
    np.testing.assert_array_equal(pixels, expected)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 48 MiB filesystem (tmpfs), so that free space really runs out."""
    with mounted_tmpfs(tmp_path / "small", "size=48m") as mount_point:
        yield mount_point


def test_low_disk_finalizes_open_acquisitions_and_refuses_new_ones(
    start_daemon: StartDaemon, small_filesystem: Path
) -> None:
    daemon = start_daemon(
        "--socket",
        "pull",
        data_root=small_filesystem / "root",
        env={"FRAMESINK_MIN_FREE_BYTES": "24MiB"},
    )
    frame = pattern(1, (512, 512), "uint16")[0]
    sent = 0
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        acquisition = start_tyx(
            publisher,
            "filling",
            output_path="low",
            output_name="low",
            dtype="uint16",
            frame_shape=(512, 512),
        )
        # Fill until the filesystem really has less than the minimum free, then stop
        # sending: the daemon must notice by itself (it checks every second).
        while _free_bytes(small_filesystem) >= 24 << 20:
            acquisition.send(frame)
            sent += 1
            daemon.wait_for(functools.partial(_written_at_least, sent))
        assert _free_bytes(small_filesystem) > 8 << 20, "the test overshot: no room left to finish"
        entry = daemon.wait_finished("filling", timeout=10)
        assert entry.reason == "error"
        assert entry.error is not None
        assert "disk almost full" in entry.error
        assert entry.frames_written == sent
        refused = start_tyx(
            publisher,
            "refused",
            output_path="late",
            output_name="x",
            dtype="uint8",
            frame_shape=(2, 2),
        )
        refused.stop()
        status = daemon.wait_for(lambda s: s.counters.acquisitions_rejected == 1)
    (rejection,) = [e for e in status.recent_errors if e.reason == "bad_output"]
    assert "acquisition refused" in rejection.detail
    assert status.free_bytes is not None
    assert status.free_bytes < 24 << 20
    record = read_metadata(daemon.data_root / "low")["framesink"]
    _, pixels, _ = read_tiff(daemon.data_root / "low/low.ome.tiff")
    assert pixels.shape[0] == record["frames_written"] >= 1
    assert not (daemon.data_root / "late").exists()


def test_real_disk_full_fails_one_acquisition_and_keeps_its_frames(
    start_daemon: StartDaemon, small_filesystem: Path
) -> None:
    """ENOSPC on a real filesystem: frames on disk stay readable, the daemon goes on."""
    daemon = start_daemon(
        socket="pull", data_root=small_filesystem / "root", env={"FRAMESINK_MIN_FREE_BYTES": "0"}
    )
    filler = small_filesystem / "filler"
    free = os.statvfs(small_filesystem).f_bavail * os.statvfs(small_filesystem).f_frsize
    filler.write_bytes(b"\1" * (free - (3 << 20)))
    frames = pattern(20, (512, 512), "uint16")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        acquisition = start_tyx(
            publisher,
            "enospc",
            output_path="full",
            output_name="full",
            dtype="uint16",
            frame_shape=(512, 512),
        )
        acquisition.send(frames)
        entry = acquisition.stop(wait=30)
    assert entry is not None
    assert entry.state == "failed"
    assert entry.error is not None
    assert "no space left" in entry.error or "disk is probably full" in entry.error
    assert "[Errno" not in entry.error
    filler.unlink()
    later = _run_one(daemon, "after", kind="push")
    assert (later.state, later.complete) == ("finished", True)
    folder = daemon.data_root / "full"
    if (folder / "framesink-journal.jsonl").exists():
        result = run_framesink("recover", str(folder))
        assert result.returncode == 0, result.stderr
    record = read_metadata(folder)["framesink"]
    written = record["frames_written"]
    assert 1 <= written < 20
    kind, pixels, _ = read_tiff(folder / record["files"]["tiff"])
    assert kind == "ome"
    np.testing.assert_array_equal(pixels.reshape(-1, 512, 512)[:written], frames[:written])


def test_at_most_max_open_acquisitions(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull", env={"FRAMESINK_MAX_OPEN": "2"})
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        handles = [
            start_tyx(
                publisher,
                name,
                output_path=name,
                output_name=name,
                dtype="uint8",
                frame_shape=(4, 4),
            )
            for name in ("one", "two", "three")
        ]
        status = daemon.wait_for(lambda s: s.counters.messages == 3)
        assert status.counters.rejected_by_reason == {"too_many_open": 1}
        for handle in handles[:2]:
            handle.send(pattern(2, (4, 4), "uint8"))
            entry = handle.stop(wait=30)
            assert entry is not None
            assert entry.complete is True
    assert not (daemon.data_root / "three").exists()
