"""Reading acquisitions back with open_acquisition and `framesink read`: finished,
running, recovered, with gaps, in both formats, pixel-exact against what was sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framesink import NotAnAcquisitionError, Publisher, StreamWriter, open_acquisition, recover

from ..helpers import DaemonProcess, run_framesink
from .test_compression import noisy

STORAGE = [
    ("ome-tiff", "none"),
    ("ome-tiff", "zstd"),
    ("ome-zarr", "none"),
    ("ome-zarr", "blosc-lz4"),
]
SUFFIX = {"ome-tiff": ".ome.tiff", "ome-zarr": ".ome.zarr"}


def _writer(folder: Path, image_format: str, codec: str, **options: Any) -> StreamWriter:
    return StreamWriter(
        folder, "c", {"axes": "TZYX", "objective": "20x", "notes": "n"}, dtype="uint16",
        frame_shape=(24, 20), shape=[None, 3], format=image_format, compression=codec,
        fsync_interval=None, **options,
    )  # fmt: skip


@pytest.mark.parametrize(("image_format", "codec"), STORAGE)
def test_running_then_finished_acquisitions_read_back_pixel_exact(
    tmp_path: Path, image_format: str, codec: str
) -> None:
    frames = noisy(12, (24, 20), "uint16")
    expected = frames.copy()
    expected[4:6] = 0
    writer = _writer(tmp_path, image_format, codec)
    writer.write(frames[:4])
    writer.skip(2)
    writer.write(frames[6:8])
    with open_acquisition(tmp_path) as running:
        assert running.running
        assert running.record is None
        assert (running.axes, running.format) == ("TZYX", image_format)
        assert running.array.shape == (3, 3, 24, 20)  # 8 frames: padded to whole steps
        assert running.missing_ranges == [[4, 5]]
        assert running.metadata["objective"] == "20x"
        pixels = np.asarray(running.array).reshape(-1, 24, 20)
        np.testing.assert_array_equal(pixels[:8], expected[:8])
        assert not pixels[8:].any()
    writer.write(frames[8:10])
    with open_acquisition(tmp_path) as later:
        assert later.array.shape == (4, 3, 24, 20)
        np.testing.assert_array_equal(later.array[3, 0], frames[9])
    writer.write(frames[10:])
    writer.finalize(metadata={"laser": "561"})
    image = tmp_path / f"c{SUFFIX[image_format]}"
    with open_acquisition(image) as finished:
        assert not finished.running
        assert finished.record is not None
        assert finished.record.frames_written == 10
        assert finished.metadata["laser"] == "561"
        assert finished.metadata["notes"] == "n"
        assert finished.image == image
        np.testing.assert_array_equal(np.asarray(finished.array).reshape(-1, 24, 20), expected)
        np.testing.assert_array_equal(finished.array[1, 2, 3:9, ::3], expected[5][3:9, ::3])
        np.testing.assert_array_equal(finished.array[2, :, -1], frames[6:9, -1])
        np.testing.assert_array_equal(
            finished.array[..., 0], expected.reshape(4, 3, 24, 20)[..., 0]
        )


@pytest.mark.parametrize("image_format", ["ome-tiff", "ome-zarr"])
def test_an_interrupted_then_recovered_acquisition_reads_back(
    tmp_path: Path, image_format: str
) -> None:
    frames = noisy(7, (24, 20), "uint16")
    writer = _writer(tmp_path, image_format, "zstd")
    writer.write(frames[:5])
    writer.write(frames[5:])
    writer._live._close_quietly()  # a crash: nothing finalized
    writer._live.journal.close()
    writer.folder.close()
    with open_acquisition(tmp_path) as interrupted:
        assert interrupted.running
        np.testing.assert_array_equal(np.asarray(interrupted.array).reshape(-1, 24, 20)[:7], frames)
    (record,) = recover(tmp_path)
    with open_acquisition(tmp_path) as recovered:
        assert recovered.record == record
        assert recovered.record.reason == "recovered"
        pixels = np.asarray(recovered.array).reshape(-1, 24, 20)
        np.testing.assert_array_equal(pixels[:7], frames)
        assert not pixels[7:].any()


def test_paths_that_are_not_acquisitions_are_named(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    for path in (tmp_path / "missing", tmp_path / "plain", tmp_path / "plain" / "notes.txt"):
        with pytest.raises(NotAnAcquisitionError, match=str(path)):
            open_acquisition(path)


def test_framesink_read_prints_the_summary(tmp_path: Path) -> None:
    frames = noisy(5, (24, 20), "uint16")
    writer = _writer(tmp_path / "a", "ome-zarr", "zstd")
    writer.write(frames)
    running = run_framesink("read", str(tmp_path / "a"), "--json")
    assert running.returncode == 0, running.stderr
    summary = json.loads(running.stdout)
    assert (summary["state"], summary["format"], summary["frames_written"]) == (
        "running", "ome-zarr", 5,
    )  # fmt: skip
    assert summary["shape"] == [2, 3, 24, 20]
    writer.finalize()
    finished = run_framesink("read", str(tmp_path / "a" / "c.ome.zarr"))
    assert finished.returncode == 0, finished.stderr
    assert "finished" in finished.stdout
    assert "[2, 3, 24, 20]" in finished.stdout
    refused = run_framesink("read", str(tmp_path))
    assert refused.returncode == 1
    assert "is neither an acquisition's folder nor its image" in refused.stderr


@pytest.mark.parametrize("image_format", ["ome-tiff", "ome-zarr"])
def test_an_acquisition_a_daemon_is_writing_shows_more_frames_on_a_later_open(
    start_daemon: Any, image_format: str
) -> None:
    daemon: DaemonProcess = start_daemon("--fsync-interval", "0.1", socket="pull")
    frames = noisy(30, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        run = publisher.start(
            "live", {"axes": "TYX"}, output_path="live", output_name="cam", dtype="uint16",
            frame_shape=(64, 48), format=image_format, compression="zstd",
        )  # fmt: skip
        run.send(frames[:10])
        daemon.wait_for(lambda s: (e := s.entry("live")) is not None and e.frames_written == 10)
        with open_acquisition(daemon.data_root / "live") as first:
            assert first.running
            assert first.array.shape[0] == 10
            np.testing.assert_array_equal(first.array[:10], frames[:10])
        run.send(frames[10:25], index=10)
        daemon.wait_for(lambda s: (e := s.entry("live")) is not None and e.frames_written == 25)
        with open_acquisition(daemon.data_root / "live") as second:
            assert second.array.shape[0] == 25
            np.testing.assert_array_equal(second.array[20:25], frames[20:25])
        run.send(frames[25:], index=25)
        run.stop(wait=20)
    with open_acquisition(daemon.data_root / "live") as finished:
        assert finished.record is not None
        np.testing.assert_array_equal(np.asarray(finished.array), frames)
