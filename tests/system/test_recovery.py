"""A real writer process is killed with SIGKILL; recovery must keep every frame on disk."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from framesink import AcquisitionRecord, RecoveryError, recover
from framesink.core import JOURNAL_FILE, RECOVERY_FAILED_FILE
from framesink.store import find_interrupted

from ..helpers import DaemonProcess, pattern, read_metadata, read_tiff, validate_ome

WRITER_SCRIPT = """
import sys
from tests.helpers import pattern
from framesink import StreamWriter

folder, axes, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
shape = [None, 2] if axes == "TZYX" else None
writer = StreamWriter(folder, "killed", {"axes": axes, "notes": "n", "lens": "x"},
                      dtype="uint16", frame_shape=(32, 24), shape=shape)
for index in range(total):
    if index == 5:
        writer.skip(2)
        continue
    if index == 6:
        continue
    writer.write(pattern(1, (32, 24), "uint16", start=index),
                 [{"delta_t": index * 0.1, "index_seen": index}])
    print(index, flush=True)
sys.stdin.read()
"""


def _kill_after(folder: Path, axes: str, frames_before_kill: int) -> int:
    """Run a writer, SIGKILL it once it has reported ``frames_before_kill`` frames."""
    with subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(folder), axes, str(frames_before_kill)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if int(line) == frames_before_kill - 1:
                break
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    return frames_before_kill


def test_sigkill_then_recover_is_pixel_exact(tmp_path: Path) -> None:
    folder = tmp_path / "acq"
    frames = _kill_after(folder, "TYX", 40)
    assert (folder / "killed.ome.tiff.partial").exists()
    assert find_interrupted(tmp_path) == [folder]

    (record,) = recover(tmp_path)

    assert (record.reason, record.complete) == ("recovered", False)
    assert record.frames_written == frames - 2
    assert record.missing_ranges == [[5, 6]]
    kind, pixels, xml = read_tiff(folder / "killed.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (40, 32, 24))
    expected = pattern(40, (32, 24), "uint16")
    expected[5:7] = 0
    np.testing.assert_array_equal(pixels, expected)
    ome = validate_ome(xml)
    assert ome.images[0].pixels.planes[0].delta_t == 0.0
    document = read_metadata(folder)
    assert (document["notes"], document["lens"]) == ("n", "x")
    assert document["framesink"]["reason"] == "recovered"
    sidecar = (folder / "killed.frames.jsonl").read_text().splitlines()
    assert len(sidecar) == 38
    assert json.loads(sidecar[-1])["index_seen"] == 39
    assert sorted(p.name for p in folder.iterdir()) == [
        "killed.frames.jsonl",
        "killed.ome.tiff",
        "metadata.json",
    ]
    assert recover(tmp_path) == []


def test_recovery_pads_a_partial_volume(tmp_path: Path) -> None:
    folder = tmp_path / "vol"
    _kill_after(folder, "TZYX", 9)
    (record,) = recover(folder)
    assert record.shape == [5, 2, 32, 24]
    assert record.missing_ranges == [[5, 6], [9, 9]]
    kind, pixels, _ = read_tiff(folder / "killed.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (5, 2, 32, 24))


def test_torn_frame_at_the_end_is_not_kept(tmp_path: Path) -> None:
    folder = tmp_path / "torn"
    _kill_after(folder, "TYX", 10)
    partial = folder / "killed.ome.tiff.partial"
    with partial.open("ab") as handle:
        handle.write(b"\x01" * 100)
    (record,) = recover(folder)
    assert record.shape == [10, 32, 24]


def test_unreadable_journal_is_reported_not_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "framesink-journal.jsonl").write_text("{not json\n")
    with pytest.raises(RecoveryError, match="unreadable journal"):
        recover(tmp_path)
    assert (folder / "framesink-journal.jsonl").exists()


def test_recover_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(RecoveryError, match="not a folder"):
        recover(tmp_path / "nope")
    assert not os.path.exists(tmp_path / "nope")


def test_recovery_leaves_a_live_acquisition_alone(tmp_path: Path) -> None:
    from framesink import StreamWriter

    writer = StreamWriter(
        tmp_path / "live", "live", {"axes": "TYX"}, dtype="uint8", frame_shape=(4, 4)
    )
    writer.write(pattern(3, (4, 4), "uint8"))
    assert find_interrupted(tmp_path) == [tmp_path / "live"]
    assert recover(tmp_path) == []
    writer.write(pattern(2, (4, 4), "uint8", start=3))
    record = writer.finalize()
    assert (record.frames_written, record.complete) == (5, True)
    np.testing.assert_array_equal(
        read_tiff(tmp_path / "live/live.ome.tiff")[1], pattern(5, (4, 4), "uint8")
    )


def test_recover_command_line(tmp_path: Path) -> None:
    from ..helpers import run_framesink

    _kill_after(tmp_path / "cli", "TYX", 12)
    result = run_framesink("recover", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "recovered killed: 10 frames written, 2 missing, shape [12, 32, 24]" in result.stdout
    again = run_framesink("recover", str(tmp_path))
    assert "nothing to recover" in again.stdout
    assert read_metadata(tmp_path / "cli")["framesink"]["reason"] == "recovered"


def test_metadata_that_could_not_be_written_is_recovered_without_losing_frames(
    tmp_path: Path,
) -> None:
    from framesink import StreamWriter, WriteError

    writer = StreamWriter(
        tmp_path, "late", {"axes": "TYX", "notes": "n"}, dtype="uint8", frame_shape=(4, 4)
    )
    writer.write(pattern(5, (4, 4), "uint8"))
    (tmp_path / "metadata.json").mkdir()  # finalize cannot write metadata.json
    with pytest.raises(WriteError, match=r"could not write metadata\.json"):
        writer.finalize()
    assert (tmp_path / "late.ome.tiff").exists()
    assert (tmp_path / "framesink-journal.jsonl").exists()
    (tmp_path / "metadata.json").rmdir()

    (record,) = recover(tmp_path)
    assert (record.frames_written, record.reason) == (5, "recovered")
    np.testing.assert_array_equal(
        read_tiff(tmp_path / "late.ome.tiff")[1], pattern(5, (4, 4), "uint8")
    )
    assert read_metadata(tmp_path)["notes"] == "n"


def test_single_frame_closed_file_is_not_misread(tmp_path: Path) -> None:
    from framesink import StreamWriter

    writer = StreamWriter(
        tmp_path, "one", {"axes": "YX"}, dtype="uint8", frame_shape=(2, 2), fsync_interval=None
    )
    writer.write(np.full((2, 2), 9, "uint8"))
    writer._live.image.close()  # closed, OME-XML not yet embedded: a crash at this point
    writer._live.journal.close()
    (record,) = recover(tmp_path)
    assert (record.frames_written, record.shape) == (1, [2, 2])
    np.testing.assert_array_equal(
        read_tiff(tmp_path / "one.ome.tiff")[1], np.full((2, 2), 9, "uint8")
    )


CLOSE_FAILS_SCRIPT = """
import json, sys
from tests.helpers import pattern
from framesink import StreamWriter, WriteError

writer = StreamWriter(sys.argv[1], "edge", {"axes": "TYX"}, dtype="uint16", frame_shape=(64, 64))
try:
    for index in range(100):
        writer.write(pattern(1, (64, 64), "uint16", start=index))
except OSError as exc:
    print("write failed:", exc, file=sys.stderr)
try:
    record = writer.finalize()
except WriteError as exc:
    record = exc.record
print(json.dumps(record.model_dump(mode="json")))
"""


def _data_offset(tmp_path: Path) -> int:
    """Where the pixels of the first frame start in a framesink TIFF."""
    from framesink import StreamWriter

    probe = StreamWriter(
        tmp_path / "probe",
        "edge",
        {"axes": "TYX"},
        dtype="uint16",
        frame_shape=(64, 64),
        fsync_interval=None,
    )
    probe.write(pattern(1, (64, 64), "uint16"))
    with tifffile.TiffFile(probe.partial_path) as tiff:
        offset = int(tiff.pages[0].dataoffsets[0])
    probe.finalize("abort")
    return offset


def test_when_even_closing_fails_the_partial_file_is_recovered_later(tmp_path: Path) -> None:
    """The file size limit falls exactly on a frame boundary: no torn bytes free room for the IFDs."""
    limit = _data_offset(tmp_path) + 7 * 64 * 64 * 2

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    folder = tmp_path / "edge"
    child = subprocess.run(
        [sys.executable, "-c", CLOSE_FAILS_SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[2],
        preexec_fn=limit_file_size,
    )
    assert child.returncode == 0, child.stderr
    record = json.loads(child.stdout)
    assert record["reason"] == "error"
    assert "could not close" in record["error"]
    assert record["files"]["tiff"] == "edge.ome.tiff.partial"
    assert (folder / "edge.ome.tiff.partial").exists()
    assert (folder / "framesink-journal.jsonl").exists()

    (recovered,) = recover(folder)
    assert recovered.frames_written == 7
    np.testing.assert_array_equal(
        read_tiff(folder / "edge.ome.tiff")[1], pattern(7, (64, 64), "uint16")
    )
    assert not (folder / "edge.ome.tiff.partial").exists()


def test_torn_journal_line_and_a_leftover_recovery_workspace(tmp_path: Path) -> None:
    """Power loss mid-append to the journal, then a recovery itself interrupted: run it again."""
    folder = tmp_path / "twice"
    _kill_after(folder, "TYX", 10)
    with (folder / "framesink-journal.jsonl").open("a") as journal:
        journal.write('{"missing": [10, ')
    leftover = folder / ".framesink-recovery"
    leftover.mkdir()
    (leftover / "killed.ome.tiff").write_bytes(b"half a file")
    (record,) = recover(tmp_path)
    assert (record.frames_written, record.missing_ranges) == (8, [[5, 6]])
    assert not leftover.exists()
    expected = pattern(10, (32, 24), "uint16")
    expected[5:7] = 0
    np.testing.assert_array_equal(read_tiff(folder / "killed.ome.tiff")[1], expected)


def test_a_folder_that_cannot_be_recovered_is_reported_and_the_others_go_on(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    root = tmp_path / "root"
    for name in ("a", "b", "c"):
        _kill_after(root / name, "TYX", 12)
    (root / "b" / JOURNAL_FILE).write_bytes(b"{not a journal header\n")

    daemon = start_daemon(data_root=root)
    status = daemon.wait_for(lambda s: not s.recovering)
    (failure,) = status.recovery_failures
    assert failure.folder == str(root / "b")
    assert "unreadable journal header" in failure.error
    marker = (root / "b" / RECOVERY_FAILED_FILE).read_text()
    assert "framesink recover" in marker
    assert (root / "b" / "killed.ome.tiff.partial").exists()
    for name in ("a", "c"):
        assert read_metadata(root / name)["framesink"]["frames_written"] == 10
        assert read_tiff(root / name / "killed.ome.tiff")[1].shape == (12, 32, 24)
    assert f"could not recover {root / 'b'}" in daemon.log()
    assert daemon.stop() == 0

    again = start_daemon(data_root=root)
    status = again.wait_for(lambda s: not s.recovering)
    assert [f.folder for f in status.recovery_failures] == [str(root / "b")]
    assert (root / "b" / JOURNAL_FILE).exists()
    assert again.stop() == 0


def test_frames_the_journal_counts_but_the_disk_lost_are_recorded_missing(tmp_path: Path) -> None:
    folder = tmp_path / "acq"
    _kill_after(folder, "TYX", 30)
    partial = folder / "killed.ome.tiff.partial"
    with tifffile.TiffFile(partial) as tiff:
        data_offset = tiff.pages[0].dataoffsets[0]
    with partial.open("r+b") as handle:  # the last 8 frames never reached the disk
        handle.truncate(data_offset + 22 * 32 * 24 * 2)

    (record,) = recover(folder)

    assert record.frames_written == 22 - 2
    assert record.missing_ranges == [[5, 6], [22, 29]]
    assert read_tiff(folder / "killed.ome.tiff")[1].shape == (30, 32, 24)


def test_a_frame_metadata_index_key_never_renumbers_the_frame(tmp_path: Path) -> None:
    """Review 2, item 6: a frame's own ``index`` key once replaced the frame number."""
    from framesink import StreamWriter

    with StreamWriter(
        tmp_path, "idx", {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2), fsync_interval=None
    ) as writer:
        writer.write(pattern(3, (2, 2), "uint8"), [{"index": 7, "delta_t": 1.5}, None, None])
    lines = [json.loads(line) for line in (tmp_path / "idx.frames.jsonl").read_text().splitlines()]
    assert lines == [{"index": 0, "user_index": 7, "delta_t": 1.5}]
    planes = validate_ome(read_tiff(tmp_path / "idx.ome.tiff")[2]).images[0].pixels.planes
    assert [(p.the_t, p.delta_t) for p in planes] == [(0, 1.5)]


def test_recovery_keeps_frame_metadata_after_an_unreadable_line(tmp_path: Path) -> None:
    """Review 2, item 6: recovery stopped copying the sidecar at a line it could not read."""
    from framesink import StreamWriter

    writer = StreamWriter(
        tmp_path, "side", {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2), fsync_interval=None
    )
    writer.write(pattern(4, (2, 2), "uint8"), [{"index": "x"}, {"n": 1}, {"n": 2}, {"n": 3}])
    sidecar = tmp_path / "side.frames.jsonl"
    lines = sidecar.read_text().splitlines()
    lines[0] = '{"index": "not a number", "n": 0}'  # as an earlier version wrote it
    sidecar.write_text("\n".join(lines) + "\n")
    writer._live._close_quietly()  # a crash: nothing finalized, no page index
    writer._live.journal.close()
    writer.folder.close()

    (record,) = recover(tmp_path)
    assert record.frames_written == 4
    kept = [json.loads(line) for line in sidecar.read_text().splitlines()]
    assert [entry["index"] for entry in kept] == [1, 2, 3]


def _crashed_writer(folder: Any, name: str, frames: int) -> None:
    """An acquisition left as a crash leaves it: frames on disk, no page index, journal."""
    from framesink import StreamWriter

    writer = StreamWriter(
        folder, name, {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2), fsync_interval=None
    )
    writer.write(pattern(frames, (2, 2), "uint8"))
    writer._live._close_quietly()
    writer._live.journal.close()
    writer.folder.close()


def test_one_folder_deeper_than_a_path_may_be_does_not_stop_recovery(tmp_path: Path) -> None:
    """Review 2, item 10: a 4 KiB output_path stopped recovery of the whole data root."""
    from framesink.store import Folder

    root = tmp_path / "root"
    root.mkdir()
    parts = ["é" * 120] * 40  # 9,600 bytes: more than PATH_MAX, as the daemon can write it
    _crashed_writer(Folder.below(root, parts), "deep", 3)
    _crashed_writer(root / "near", "near", 2)

    records = recover(root)

    assert sorted((r.acquisition, r.frames_written) for r in records) == [
        ("deep", 3),
        ("near", 2),
    ]
    assert read_metadata(root / "near")["framesink"]["reason"] == "recovered"
    with Folder.below(root, parts) as deep:
        assert deep.is_file("metadata.json")
        assert not deep.exists("framesink-journal.jsonl")


def _power_cut(tmp_path: Path, rebooted: bool) -> AcquisitionRecord:
    """Six frames, the first three fsynced; the disk then holds zeros where frames 4 and 5
    went (their blocks never written), and the machine restarted or not."""
    from framesink import StreamWriter

    writer = StreamWriter(
        tmp_path, "cut", {"axes": "TYX"}, dtype="uint8", frame_shape=(64, 64), fsync_interval=None
    )
    writer.write(pattern(3, (64, 64), "uint8", start=1))
    writer.sync()
    writer.write(pattern(3, (64, 64), "uint8", start=4))
    partial = writer.partial_path
    with tifffile.TiffFile(partial) as tiff:
        offset = int(tiff.pages[0].dataoffsets[0])
    writer._live._close_quietly()
    writer._live.journal.close()
    writer.folder.close()
    with partial.open("r+b") as handle:
        handle.seek(offset + 4 * 64 * 64)
        handle.write(bytes(2 * 64 * 64))
    if rebooted:
        os.utime(tmp_path / "framesink-journal.jsonl", (1000, 1000))
    (record,) = recover(tmp_path)
    return record


def test_after_a_power_loss_blank_frames_past_the_last_fsync_are_missing(tmp_path: Path) -> None:
    """Review 2, item 13: zeros where unsynced frames should be were counted as written."""
    record = _power_cut(tmp_path, rebooted=True)
    assert (record.frames_written, record.missing_ranges) == (4, [[4, 5]])
    pixels = read_tiff(tmp_path / "cut.ome.tiff")[1]
    np.testing.assert_array_equal(pixels[:4], pattern(4, (64, 64), "uint8", start=1))


def test_without_a_restart_every_frame_handed_to_the_system_is_kept(tmp_path: Path) -> None:
    """A killed writer (no power loss): zeros are what the camera sent."""
    record = _power_cut(tmp_path, rebooted=False)
    assert (record.frames_written, record.missing_ranges) == (6, [])
