"""Compressed OME-TIFF: zstd and deflate pages that read back pixel-exact everywhere,
bad codecs refused before anything is made, and crashes recovered exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import tifffile

from framesink import Publisher, StreamWriter, recover
from framesink.core import RefusalError

from ..helpers import DaemonProcess, read_metadata, read_tiff, validate_ome

REPOSITORY = Path(__file__).parents[2]
TIFF_CODES = {"zstd": 50000, "deflate": 8}


class Layout(NamedTuple):
    """What a compressed test acquisition looks like."""

    axes: str
    dtype: str
    frame_shape: tuple[int, ...]
    shape: list[int | None] | None = None


CASES = [
    Layout("TYX", "uint16", (48, 40)),
    Layout("TCZYX", "uint16", (32, 24), [None, 2, 3]),
    Layout("TYXS", "uint8", (30, 20, 3)),
    Layout("TYX", "uint8", (33, 17)),
    Layout("TYX", "float32", (20, 24)),
]


def noisy(
    count: int, frame_shape: tuple[int, ...], dtype: str, seed: int = 0
) -> np.ndarray[Any, Any]:
    """Frames like a camera's: Poisson noise on a smooth background (floats scaled)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(frame_shape[:2])
    background = 100 + 50 * np.sin(columns / 9) * np.cos(rows / 7)
    if len(frame_shape) == 3:
        background = background[..., None] * np.ones(frame_shape[2])
    frames = rng.poisson(background, (count, *frame_shape))
    if dtype == "float32":
        return (frames / 7.0).astype(dtype)
    return frames.astype(dtype)


def write_with_a_gap(folder: Path, codec: str, layout: Layout) -> np.ndarray[Any, Any]:
    """``folder/c.ome.tiff``: 14 camera-like frames, 5-7 never received (zero pages)
    and padding to a whole step; the frames (received or not) are returned."""
    frames = noisy(14, layout.frame_shape, layout.dtype)
    with StreamWriter(
        folder, "c", {"axes": layout.axes, "notes": "n"}, dtype=layout.dtype,
        frame_shape=layout.frame_shape, shape=layout.shape, compression=codec,
    ) as writer:  # fmt: skip
        writer.write(frames[:5])
        writer.skip(3)
        writer.write(frames[8:])
    return frames


def _pages(path: Path) -> list[tuple[int, int]]:
    with tifffile.TiffFile(path) as tiff:
        return [(int(page.compression), int(page.predictor)) for page in tiff.pages]  # type: ignore[union-attr]


@pytest.mark.parametrize("codec", ["zstd", "deflate"])
@pytest.mark.parametrize("layout", CASES, ids=str)
def test_compressed_pages_read_back_pixel_exact(tmp_path: Path, codec: str, layout: Layout) -> None:
    frames = write_with_a_gap(tmp_path, codec, layout)
    _axes, dtype, frame_shape, shape = layout
    record = read_metadata(tmp_path)["framesink"]
    per_step = 1 if shape is None else int(np.prod([s for s in shape[1:] if s]))
    total = -(-14 // per_step) * per_step
    assert (record["compression"], record["compression_level"]) == (codec, 1)
    assert (record["frames_written"], record["missing_ranges"][0]) == (11, [5, 7])
    kind, pixels, xml = read_tiff(tmp_path / "c.ome.tiff")
    assert kind == "ome"
    flat = pixels.reshape(total, *frame_shape)
    np.testing.assert_array_equal(flat[:5], frames[:5])
    np.testing.assert_array_equal(flat[8:14], frames[8:])
    assert not flat[5:8].any()
    assert not flat[14:].any()
    assert len(validate_ome(xml).images[0].pixels.tiff_data_blocks) >= 1
    predictor = 1 if dtype == "float32" else 2
    assert set(_pages(tmp_path / "c.ome.tiff")) == {(TIFF_CODES[codec], predictor)}


def test_compression_shrinks_camera_frames_and_levels_are_kept(tmp_path: Path) -> None:
    frames = noisy(8, (256, 256), "uint16")
    sizes = {}
    for codec, level in [("none", None), ("zstd", 1), ("zstd", 9), ("deflate", 6)]:
        folder = tmp_path / f"{codec}{level}"
        with StreamWriter(
            folder,
            "c",
            {"axes": "TYX"},
            dtype="uint16",
            frame_shape=(256, 256),
            compression=codec,
            compression_level=level,
        ) as writer:
            writer.write(frames)
        sizes[codec, level] = (folder / "c.ome.tiff").stat().st_size
        assert read_metadata(folder)["framesink"]["compression_level"] == level
        np.testing.assert_array_equal(read_tiff(folder / "c.ome.tiff")[1], frames)
    assert sizes["zstd", 1] < 0.8 * sizes["none", None]
    assert sizes["deflate", 6] < 0.8 * sizes["none", None]


@pytest.mark.parametrize(
    ("codec", "level", "says"),
    [
        ("lz4", None, "unknown compression 'lz4'"),
        ("zstd", 0, "zstd takes levels 1-22; got 0"),
        ("zstd", 23, "zstd takes levels 1-22; got 23"),
        ("deflate", 13, "deflate takes levels 1-12; got 13"),
        ("zstd", 1.5, "must be an integer"),
        ("zstd", True, "must be an integer"),
        ("none", 3, "needs a compression"),
        ("blosc-lz4", None, "ome-tiff cannot hold blosc-lz4"),
    ],
)
def test_a_bad_codec_is_refused_before_anything_is_made(
    tmp_path: Path, codec: str, level: Any, says: str
) -> None:
    with pytest.raises(RefusalError, match=says) as refused:
        StreamWriter(
            tmp_path / "out",
            "c",
            {"axes": "TYX"},
            dtype="uint8",
            frame_shape=(4, 4),
            compression=codec,
            compression_level=level,
        )
    assert refused.value.reason == "bad_compression"
    assert not (tmp_path / "out").exists()


def test_a_failed_write_keeps_the_whole_pages_and_cuts_the_torn_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails in the middle of a page's strips: the file ends with the pages
    before it, readable, and the record says how many."""
    from framesink.tiff import _compressed

    frames = noisy(6, (128, 2048), "uint16")  # 2 strips a page
    writer = StreamWriter(
        tmp_path, "c", {"axes": "TYX"}, dtype="uint16", frame_shape=(128, 2048), compression="zstd"
    )
    writer.write(frames[:3])
    original = _compressed.CompressedSeries._write_page

    def failing(self: Any, strips: Any) -> None:
        def torn() -> Any:
            yield next(strips)
            raise OSError(28, "No space left on device")

        original(self, torn())

    monkeypatch.setattr(_compressed.CompressedSeries, "_write_page", failing)
    with pytest.raises(OSError, match="after 3 frames"):
        writer.write(frames[3:])
    monkeypatch.undo()
    assert "write failed" in (writer.finalize().error or "")
    record = read_metadata(tmp_path)["framesink"]
    assert (record["frames_written"], record["reason"]) == (3, "error")
    _kind, pixels, _ = read_tiff(tmp_path / "c.ome.tiff")
    np.testing.assert_array_equal(pixels, frames[:3])


KILLED_WRITER = """
import sys
from tests.system.test_compression import noisy
from framesink import StreamWriter

folder, codec = sys.argv[1], sys.argv[2]
frames = noisy(400, (128, 96), "uint16")
writer = StreamWriter(folder, "k", {"axes": "TYX", "notes": "n"}, dtype="uint16",
                      frame_shape=(128, 96), compression=codec)
for first in range(0, 400, 4):
    writer.write(frames[first:first + 4], [{"delta_t": i} for i in range(first, first + 4)])
    print(first + 4, flush=True)
writer.finalize()
print("finalized", flush=True)
"""


@pytest.mark.parametrize(("codec", "seed"), [("zstd", 0), ("zstd", 1), ("deflate", 2)])
def test_sigkill_at_a_random_moment_keeps_every_reported_frame(
    tmp_path: Path, codec: str, seed: int
) -> None:
    """Killed while compressing and writing (or finalizing): recovery keeps at least the
    frames the writer had reported, each pixel-exact, and invents none."""
    stop_after = int(np.random.default_rng(seed).integers(8, 400))
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), codec],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
    ) as child:
        assert child.stdout is not None
        reported = 0
        for line in child.stdout:
            if line.strip() == "finalized":
                break
            reported = int(line)
            if reported >= stop_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    if (tmp_path / "framesink-journal.jsonl").exists():
        (record,) = recover(tmp_path)
        assert record.reason in ("recovered", "stop")
    document = read_metadata(tmp_path)["framesink"]
    written = document["frames_written"]
    assert reported <= written <= 400
    assert (document["missing_ranges"], document["compression"]) == ([], codec)
    _kind, pixels, xml = read_tiff(tmp_path / "k.ome.tiff")
    np.testing.assert_array_equal(pixels, noisy(400, (128, 96), "uint16")[:written])
    validate_ome(xml)


def _daemon_start(publisher: Publisher, name: str, **options: Any) -> Any:
    return publisher.start(
        name,
        {"axes": "TYX"},
        output_path=name,
        output_name="cam",
        dtype="uint16",
        frame_shape=(64, 48),
        **options,
    )


def test_the_daemon_default_and_refusals_beside_a_healthy_acquisition(
    start_daemon: Any,
) -> None:
    daemon: DaemonProcess = start_daemon(
        "--compression", "zstd", "--compression-level", "3", socket="pull"
    )
    frames = noisy(12, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        default = _daemon_start(publisher, "default")
        deflate = _daemon_start(publisher, "deflate", compression="deflate")
        refused = [
            _daemon_start(publisher, "unknown", compression="lz4"),
            _daemon_start(publisher, "level", compression="zstd", compression_level=40),
            _daemon_start(publisher, "blosc", compression="blosc-zstd"),
        ]
        default.send(frames)
        deflate.send(frames)
        for acquisition in refused:
            acquisition.stop()
        default_entry = default.stop(wait=20)
        deflate_entry = deflate.stop(wait=20)
    assert default_entry is not None
    assert deflate_entry is not None
    assert (default_entry.state, default_entry.frames_written) == ("finished", 12)
    assert (default_entry.compression, deflate_entry.compression) == ("zstd", "deflate")
    status = daemon.status()
    assert status.counters.rejected_by_reason.get("bad_compression") == 3
    assert status.counters.acquisitions_rejected == 3
    details = " ".join(error.detail for error in status.recent_errors)
    assert "lz4" in details
    assert "got 40" in details
    assert "blosc-zstd" in details
    for name in ("unknown", "level", "blosc"):
        assert not (daemon.data_root / name).exists()
        entry = daemon.client.acquisition(name)
        assert entry is not None
        assert (entry.state, entry.refusal) == ("refused", "bad_compression")
    for name, codec, level in [("default", "zstd", 3), ("deflate", "deflate", 1)]:
        record = read_metadata(daemon.data_root / name)["framesink"]
        assert (record["compression"], record["compression_level"]) == (codec, level)
        np.testing.assert_array_equal(
            read_tiff(daemon.data_root / name / "cam.ome.tiff")[1], frames
        )
        assert set(_pages(daemon.data_root / name / "cam.ome.tiff")) == {(TIFF_CODES[codec], 2)}
    assert daemon.stop() == 0


def test_a_killed_daemon_recovers_its_compressed_acquisition_at_restart(
    start_daemon: Any, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    daemon: DaemonProcess = start_daemon("--compression", "deflate", data_root=root, socket="pull")
    frames = noisy(40, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        acquisition = _daemon_start(publisher, "crash")
        acquisition.send(frames[:25], chunk=5)
        acquisition.send(frames[30:], index=30)
        reported = daemon.wait_for(
            lambda s: (e := s.entry("crash")) is not None and e.frames_written == 35
        )
        assert reported.entry("crash") is not None
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    restarted: DaemonProcess = start_daemon(data_root=root)
    restarted.wait_for(lambda s: not s.recovering)
    record = read_metadata(root / "crash")["framesink"]
    assert (record["reason"], record["frames_written"], record["missing_ranges"]) == (
        "recovered",
        35,
        [[25, 29]],
    )
    assert record["compression"] == "deflate"
    pixels = read_tiff(root / "crash/cam.ome.tiff")[1]
    np.testing.assert_array_equal(pixels[:25], frames[:25])
    np.testing.assert_array_equal(pixels[30:], frames[30:])
    assert not pixels[25:30].any()
    assert set(_pages(root / "crash/cam.ome.tiff")) == {(8, 2)}
    assert restarted.stop() == 0


def test_frames_from_a_shared_memory_ring_are_compressed_where_they_are(
    start_daemon: Any,
) -> None:
    """The pool compresses straight from the ring's slots (the ring is small: slots
    are reused while later frames compress); every slot comes back, every pixel is
    exact."""
    daemon: DaemonProcess = start_daemon(socket="pull")
    frames = noisy(120, (128, 160), "uint16")
    ring_bytes = 16 * frames[0].nbytes
    with Publisher(
        daemon.ingest, kind="push", control=daemon.control, shared_memory=ring_bytes
    ) as publisher:
        acquisition = publisher.start(
            "ring",
            {"axes": "TYX"},
            output_path="ring",
            output_name="cam",
            dtype="uint16",
            frame_shape=(128, 160),
            compression="zstd",
            compression_level=3,
        )
        for frame in frames:
            acquisition.send(frame)
        entry = acquisition.stop(wait=30)
        ring = publisher.ring
        assert ring is not None
        deadline = time.monotonic() + 10
        while ring.lent and time.monotonic() < deadline:
            ring.collect_releases(0.2)
        assert ring.lent == 0, "every slot came back"
    assert entry is not None
    assert (entry.state, entry.frames_written) == ("finished", 120)
    image = daemon.data_root / "ring" / "cam.ome.tiff"
    np.testing.assert_array_equal(read_tiff(image)[1], frames)
    assert set(_pages(image)) == {(TIFF_CODES["zstd"], 2)}
    assert read_metadata(daemon.data_root / "ring")["framesink"]["compression_level"] == 3
    assert daemon.stop() == 0


@pytest.mark.parametrize("rebooted", [True, False])
def test_a_power_cut_leaves_unwritten_compressed_pages_missing_not_invented(
    tmp_path: Path, rebooted: bool
) -> None:
    """Six frames, three fsynced; the blocks of pages 4 and 5 never reached the disk
    (zeros). They cannot be decoded and are recorded missing, after a reboot or not: a
    page that does not decode is never a frame. Frame 3, intact though not fsynced, is
    kept."""
    frames = noisy(6, (64, 64), "uint16")
    writer = StreamWriter(
        tmp_path, "cut", {"axes": "TYX"}, dtype="uint16", frame_shape=(64, 64),
        fsync_interval=None, compression="zstd",
    )  # fmt: skip
    writer.write(frames[:3])
    writer.sync()
    writer.write(frames[3:])
    partial = writer.partial_path
    with tifffile.TiffFile(partial) as tiff:
        lost = [
            (int(tiff.pages[index].dataoffsets[0]), int(tiff.pages[index].databytecounts[0]))
            for index in (4, 5)
        ]
    writer._live._close_quietly()
    writer._live.journal.close()
    writer.folder.close()
    with partial.open("r+b") as handle:
        for offset, size in lost:
            handle.seek(offset)
            handle.write(bytes(size))
    if rebooted:
        os.utime(tmp_path / "framesink-journal.jsonl", (1000, 1000))
    (record,) = recover(tmp_path)
    pixels = read_tiff(tmp_path / "cut.ome.tiff")[1]
    np.testing.assert_array_equal(pixels[:4], frames[:4])
    assert not pixels[4:].any()
    assert (record.frames_written, record.missing_ranges) == (4, [[4, 5]])


def test_sigterm_drains_every_queued_frame_of_two_compressed_acquisitions(
    start_daemon: Any,
) -> None:
    """SIGTERM as soon as two open compressed acquisitions (sharing the pool) have
    received their frames: every received frame is compressed, written and finalized
    before the exit."""
    daemon: DaemonProcess = start_daemon(socket="pull")
    frames = noisy(60, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        runs = [
            _daemon_start(publisher, "zstd", compression="zstd"),
            _daemon_start(publisher, "deflate", compression="deflate", compression_level=9),
        ]
        for run in runs:
            run.send(frames)
    daemon.wait_for(lambda s: s.counters.frames_received == 120)
    assert daemon.stop(signal.SIGTERM) == 0
    for name, code in (("zstd", 50000), ("deflate", 8)):
        record = read_metadata(daemon.data_root / name)["framesink"]
        assert (record["reason"], record["frames_written"], record["missing_ranges"]) == (
            "shutdown",
            60,
            [],
        )
        image = daemon.data_root / name / "cam.ome.tiff"
        np.testing.assert_array_equal(read_tiff(image)[1], frames)
        assert set(_pages(image)) == {(code, 2)}
