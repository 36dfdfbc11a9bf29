"""A writer killed at every step of finalizing, and at random moments: recovery keeps
exactly the frames that were written, never bytes of the page index as frames."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from framesink import recover

from ..helpers import read_metadata, read_ome_zarr, read_tiff, validate_ome

REPOSITORY = Path(__file__).parents[2]

WRITER = """
import importlib, os, signal, sys
import numpy as np
from framesink import StreamWriter

folder, frames, crash, codec = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
chunks = {"format": "ome-zarr", "shard_frames": 300} if sys.argv[5] == "ome-zarr" else {}
if crash != "none":
    module_name, qualname, when, nth = crash.split(":")
    owner = importlib.import_module(module_name)
    *path, attribute = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, attribute)
    calls = [0]

    def crashing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attribute, crashing)

writer = StreamWriter(folder, "tiny", {"axes": "TYX", "notes": "n"}, dtype="uint8",
                      frame_shape=(1, 1), fsync_interval=None, compression=codec, **chunks)
values = (np.arange(frames) % 251).astype(np.uint8).reshape(-1, 1, 1)
writer.write(values[:1000], [{"delta_t": 0.001 * i} for i in range(1000)])
for first in range(1000, frames, 50_000):
    writer.write(values[first:first + 50_000])
print("finalizing", flush=True)
writer.finalize(metadata={"notes": "final"})
print("finalized", flush=True)
"""

CRASH_POINTS = [
    "framesink.tiff._series:ContiguousSeries.close:before:1",
    "tifffile:TiffWriter.close:after:1",
    "framesink.tiff._ifds:_link:before:1",
    "framesink.tiff._ifds:_link:after:1",
    "framesink.tiff._image:TiffImage.describe:after:1",
    "os:replace:before:1",
    "os:replace:after:1",
    "os:replace:before:2",
    "framesink.store._journal:Journal.remove:before:1",
]


COMPRESSED_CRASH_POINTS = [
    "framesink.tiff._compressed:CompressedSeries.close:before:1",
    "tifffile:TiffWriter.close:after:1",
    "framesink.tiff._image:TiffImage.describe:after:1",
    "os:replace:before:1",
    "os:replace:after:1",
    "framesink.store._journal:Journal.remove:before:1",
]


ZARR_CRASH_POINTS = [
    "framesink.omezarr._image:ZarrImage.close:before:1",
    "framesink.omezarr._image:ZarrImage.close:after:1",
    "framesink.omezarr._image:ZarrImage.describe:after:1",
    "framesink.store._live:LiveFiles._publish:before:1",
    "framesink.store._live:LiveFiles._publish:after:1",
    "framesink.store._journal:Journal.remove:before:1",
]


def _writer(
    folder: Path, frames: int, crash: str, codec: str = "none", image_format: str = "ome-tiff"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), str(frames), crash, codec, image_format],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
    )


def _check_recovered(folder: Path, frames: int) -> None:
    """Every frame written is there, pixel-exact, and nothing else; no leftovers."""
    if (folder / "framesink-journal.jsonl").exists():
        (record,) = recover(folder)
        assert record.frames_written == frames
        assert record.reason == "recovered"
    document = read_metadata(folder)
    assert document["framesink"]["frames_written"] == frames
    assert document["framesink"]["shape"] == [frames, 1, 1]
    kind, pixels, xml = read_tiff(folder / "tiny.ome.tiff")
    assert kind == "ome"
    expected = (np.arange(frames) % 251).astype(np.uint8).reshape(-1, 1, 1)
    np.testing.assert_array_equal(pixels, expected)
    assert len(validate_ome(xml).images[0].pixels.planes) == 1000
    assert sorted(p.name for p in folder.iterdir()) == [
        "metadata.json",
        "tiny.frames.jsonl",
        "tiny.ome.tiff",
    ]


@pytest.mark.parametrize("crash", CRASH_POINTS)
def test_a_kill_at_each_step_of_finalizing_is_recovered_exactly(tmp_path: Path, crash: str) -> None:
    frames = 2_000
    with _writer(tmp_path, frames, crash) as child:
        assert child.wait(120) == -signal.SIGKILL, f"{crash} was never reached"
    _check_recovered(tmp_path, frames)


@pytest.mark.parametrize("crash", COMPRESSED_CRASH_POINTS)
def test_a_kill_at_each_step_of_finalizing_a_compressed_file_is_recovered_exactly(
    tmp_path: Path, crash: str
) -> None:
    frames = 2_000
    with _writer(tmp_path, frames, crash, "zstd") as child:
        assert child.wait(120) == -signal.SIGKILL, f"{crash} was never reached"
    _check_recovered(tmp_path, frames)


@pytest.mark.parametrize("crash", ZARR_CRASH_POINTS)
@pytest.mark.parametrize("codec", ["none", "blosc-lz4"])
def test_a_kill_at_each_step_of_finalizing_an_ome_zarr_is_recovered_exactly(
    tmp_path: Path, crash: str, codec: str
) -> None:
    frames = 2_000
    with _writer(tmp_path, frames, crash, codec, "ome-zarr") as child:
        assert child.wait(120) == -signal.SIGKILL, f"{crash} was never reached"
    if (tmp_path / "framesink-journal.jsonl").exists():
        (record,) = recover(tmp_path)
        assert (record.frames_written, record.reason) == (frames, "recovered")
    record = read_metadata(tmp_path)["framesink"]
    assert (record["frames_written"], record["format"]) == (frames, "ome-zarr")
    pixels, attributes = read_ome_zarr(tmp_path / "tiny.ome.zarr")
    expected = (np.arange(frames) % 251).astype(np.uint8).reshape(-1, 1, 1)
    np.testing.assert_array_equal(pixels, expected)
    assert "notes" not in attributes
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metadata.json",
        "tiny.frames.jsonl",
        "tiny.ome.zarr",
    ]


def _kill_at_random_while_finalizing(
    folder: Path, frames: int, seed: int, codec: str = "none"
) -> None:
    with _writer(folder, frames, "none", codec) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "finalizing"
        time.sleep(random.Random(seed).uniform(0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    _check_recovered(folder, frames)


def test_kills_at_random_moments_of_finalizing(tmp_path: Path) -> None:
    for seed in range(5):
        _kill_at_random_while_finalizing(tmp_path / f"run{seed}", 20_000, seed)


def test_kills_at_random_moments_of_finalizing_compressed_files(tmp_path: Path) -> None:
    for seed in range(3):
        _kill_at_random_while_finalizing(tmp_path / f"run{seed}", 3_000, seed, "deflate")


@pytest.mark.slow
def test_twenty_kills_at_random_moments_of_finalizing_large_acquisitions(tmp_path: Path) -> None:
    for seed in range(20):
        _kill_at_random_while_finalizing(tmp_path / f"run{seed}", 200_000, seed)
