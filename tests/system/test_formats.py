"""A format is one package and one registry entry: a format that exists only in the tests
(``tests/npy_format.py``, one ``.npy`` file per frame, registered by an entry point) runs
through the real daemon, its status, recovery after SIGKILL and ``framesink recover``,
with nothing of the daemon, the store or recovery changed for it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framesink import Publisher, StreamWriter
from framesink.formats import FORMATS

from ..helpers import DaemonProcess, launch_daemon, pattern, read_metadata, run_framesink
from ..npy_format import DESCRIPTION, FORMAT, frame_file, write_entry_point

REPOSITORY = Path(__file__).parents[2]
SHAPE = (8, 6)


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which installed packages provide the npy-frames format."""
    site = tmp_path / "site"
    write_entry_point(site)
    path = os.pathsep.join([str(site), str(REPOSITORY), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path.rstrip(os.pathsep)}


def _read_npys(image: Path, frames: int) -> np.ndarray[Any, Any]:
    """Every frame of an npy-frames image; a frame without a file reads as zeros."""
    stack = np.zeros((frames, *SHAPE), "uint16")
    for index in range(frames):
        if (image / frame_file(index)).exists():
            stack[index] = np.load(image / frame_file(index))
    return stack


def _start(publisher: Publisher, acquisition: str, image_format: str) -> Any:
    return publisher.start(
        acquisition,
        {"axes": "TYX", "notes": "kept in metadata.json only", "lens": "10x"},
        output_path=acquisition,
        output_name="cam",
        dtype="uint16",
        frame_shape=SHAPE,
        format=image_format,
    )


def test_the_daemon_writes_a_format_it_learns_from_an_entry_point(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    daemon = launch_daemon(tmp_path, 0, env=plugin_env, socket="pull")
    try:
        frames = pattern(10, SHAPE, "uint16")
        with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
            healthy = _start(publisher, "tiff", "ome-tiff")
            refused = _start(publisher, "nosuch", "no-such-format")
            npys = _start(publisher, "npys", "npy-frames")
            npys.send(frames[:4])
            npys.send(frames[6:], index=6)
            running = daemon.wait_for(
                lambda s: (e := s.entry("npys")) is not None and e.frames_written == 8
            )
            entry = running.entry("npys")
            assert entry is not None
            assert entry.path.endswith("cam.npys.partial")
            healthy.send(frames)
            refused.stop()
            npys_entry = npys.stop({"notes": "final"}, wait=20)
            tiff_entry = healthy.stop(wait=20)
        assert npys_entry is not None
        assert tiff_entry is not None
        assert (npys_entry.state, npys_entry.frames_written, npys_entry.frames_missing) == (
            "finished",
            8,
            2,
        )
        assert npys_entry.path.endswith("cam.npys")
        assert tiff_entry.path.endswith("cam.ome.tiff")
        status = daemon.status()
        assert status.counters.rejected_by_reason.get("bad_format") == 1
        assert any("no-such-format" in e.detail for e in status.recent_errors)
        assert not (daemon.data_root / "nosuch").exists()
    finally:
        assert daemon.stop() == 0

    folder = daemon.data_root / "npys"
    document = read_metadata(folder)
    record = document["framesink"]
    assert record["files"]["image"] == "cam.npys"
    assert "tiff" not in record["files"] or record["files"]["tiff"] is None
    assert (record["missing_ranges"], record["reason"], record["complete"]) == (
        [[4, 5]],
        "stop",
        False,
    )
    assert document["notes"] == "final"
    expected = frames.copy()
    expected[4:6] = 0
    np.testing.assert_array_equal(_read_npys(folder / "cam.npys", 10), expected)
    described = json.loads((folder / "cam.npys" / DESCRIPTION).read_text())
    assert described["metadata"] == {"axes": "TYX", "lens": "10x"}
    assert read_metadata(daemon.data_root / "tiff")["framesink"]["files"]["tiff"] == "cam.ome.tiff"


def _killed_mid_acquisition(tmp_path: Path, env: dict[str, str], number: int) -> DaemonProcess:
    daemon = launch_daemon(tmp_path, number, env=env, socket="pull")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        npys = _start(publisher, "npys", "npy-frames")
        npys.send(pattern(5, SHAPE, "uint16"))
        npys.send(pattern(3, SHAPE, "uint16", start=7), index=7)
        daemon.wait_for(lambda s: (e := s.entry("npys")) is not None and e.frames_written == 8)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    assert (daemon.data_root / "npys" / "cam.npys.partial").is_dir()
    return daemon


def _check_recovered(folder: Path) -> None:
    record = read_metadata(folder)["framesink"]
    assert (record["reason"], record["frames_written"], record["missing_ranges"]) == (
        "recovered",
        8,
        [[5, 6]],
    )
    expected = np.concatenate(
        [
            pattern(5, SHAPE, "uint16"),
            np.zeros((2, *SHAPE), "uint16"),
            pattern(3, SHAPE, "uint16", start=7),
        ]
    )
    np.testing.assert_array_equal(_read_npys(folder / "cam.npys", 10), expected)
    assert sorted(p.name for p in folder.iterdir()) == ["cam.npys", "metadata.json"]


def test_framesink_recover_rebuilds_a_killed_acquisition_of_that_format(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    daemon = _killed_mid_acquisition(tmp_path, plugin_env, 0)
    result = run_framesink("recover", str(daemon.data_root), env=plugin_env)
    assert result.returncode == 0, result.stderr
    _check_recovered(daemon.data_root / "npys")


def test_the_daemon_recovers_it_at_start(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    killed = _killed_mid_acquisition(tmp_path, plugin_env, 0)
    daemon = launch_daemon(tmp_path, 1, data_root=killed.data_root, env=plugin_env)
    try:
        daemon.wait_for(lambda s: not s.recovering)
        _check_recovered(killed.data_root / "npys")
    finally:
        assert daemon.stop() == 0


def test_recovery_without_the_format_installed_fails_that_folder_only(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    killed = _killed_mid_acquisition(tmp_path, plugin_env, 0)
    result = run_framesink("recover", str(killed.data_root))
    assert result.returncode == 1
    assert "npy-frames" in result.stderr
    assert "does not know" in result.stderr
    assert (killed.data_root / "npys" / "cam.npys.partial").is_dir()


def test_the_streaming_writer_takes_a_registered_format(tmp_path: Path) -> None:
    FORMATS.register(FORMAT)
    frames = pattern(3, SHAPE, "uint16")
    with StreamWriter(
        tmp_path, "cam", {"axes": "TYX"}, dtype="uint16", frame_shape=SHAPE, format="npy-frames"
    ) as writer:
        writer.write(frames)
    assert writer.record is not None
    assert writer.record.files.image == "cam.npys"
    np.testing.assert_array_equal(_read_npys(tmp_path / "cam.npys", 3), frames)
    with pytest.raises(ValueError, match="unknown format 'nope'"):
        StreamWriter(
            tmp_path / "x", "cam", {"axes": "TYX"}, dtype="uint16", frame_shape=SHAPE, format="nope"
        )
