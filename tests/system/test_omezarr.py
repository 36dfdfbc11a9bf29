"""OME-Zarr: NGFF 0.5 on Zarr v3, sharded and compressed, read back pixel-exact by
zarr-python and tensorstore, validated by ome-zarr-models, refused before anything is
made when it cannot hold an acquisition, and recovered exactly after a crash."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framesink import Publisher, StreamWriter, recover
from framesink.core import RefusalError

from ..helpers import DaemonProcess, read_metadata, read_ome_zarr, read_tiff
from .test_compression import Layout, noisy

REPOSITORY = Path(__file__).parents[2]
CODECS = ["none", "zstd", "deflate", "blosc-lz4", "blosc-zstd"]
CASES = [
    Layout("TYX", "uint16", (48, 40)),
    Layout("TCZYX", "uint16", (32, 24), [None, 2, 3]),
    Layout("TYXS", "uint8", (30, 20, 3)),
    Layout("TYX", "uint8", (33, 17)),
    Layout("TZYX", "float32", (20, 24), [None, 4]),
]
METADATA = {
    "channel_names": ["GFP", "mCherry"],
    "physical_size_x": 0.65,
    "physical_size_y": 0.65,
    "physical_size_z": 2.0,
    "time_increment": 1.5,
    "objective": "20x",
    "notes": "kept in metadata.json only",
}


def as_frames(pixels: np.ndarray[Any, Any], layout: Layout) -> np.ndarray[Any, Any]:
    """The array's pixels back in frame order and the frames' own shape (an RGB
    array's ``c`` axis, before ``y``, back to interleaved samples)."""
    if layout.axes.endswith("S"):
        pixels = np.moveaxis(pixels, -3, -1)
    return pixels.reshape(-1, *layout.frame_shape)


def write_zarr_with_a_gap(
    folder: Path, codec: str, layout: Layout, **options: Any
) -> np.ndarray[Any, Any]:
    """``folder/c.ome.zarr``: 14 camera-like frames, 5-7 never received, padded to a
    whole step; the frames (received or not) are returned."""
    frames = noisy(14, layout.frame_shape, layout.dtype)
    with StreamWriter(
        folder, "c", {"axes": layout.axes, **METADATA}, dtype=layout.dtype,
        frame_shape=layout.frame_shape, shape=layout.shape, format="ome-zarr",
        compression=codec, **options,
    ) as writer:  # fmt: skip
        writer.write(frames[:5])
        writer.skip(3)
        writer.write(frames[8:])
    return frames


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("layout", CASES, ids=str)
def test_every_layout_and_codec_reads_back_pixel_exact(
    tmp_path: Path, codec: str, layout: Layout
) -> None:
    frames = write_zarr_with_a_gap(tmp_path, codec, layout)
    pixels, attributes = read_ome_zarr(tmp_path / "c.ome.zarr")
    flat = as_frames(pixels, layout)
    np.testing.assert_array_equal(flat[:5], frames[:5])
    np.testing.assert_array_equal(flat[8:14], frames[8:])
    assert not flat[5:8].any()
    assert not flat[14:].any()
    record = read_metadata(tmp_path)["framesink"]
    assert (record["format"], record["compression"]) == ("ome-zarr", codec)
    assert (record["frames_written"], record["missing_ranges"][0]) == (11, [5, 7])
    assert record["files"]["image"] == "c.ome.zarr"
    assert "tiff" not in record["files"] or record["files"]["tiff"] is None
    assert attributes["objective"] == "20x"
    assert "notes" not in attributes
    multiscale = attributes["ome"]["multiscales"][0]
    letters = "".join(axis["name"] for axis in multiscale["axes"])
    expected = {"TYX": "tyx", "TCZYX": "tczyx", "TYXS": "tcyx", "TZYX": "tzyx"}[layout.axes]
    assert letters == expected
    assert len(pixels.shape) == len(expected)


def test_ngff_attributes_carry_units_scales_and_channel_names(tmp_path: Path) -> None:
    layout = Layout("TCZYX", "uint16", (32, 24), [None, 2, 3])
    write_zarr_with_a_gap(tmp_path, "zstd", layout)
    _pixels, attributes = read_ome_zarr(tmp_path / "c.ome.zarr")
    ome = attributes["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    assert multiscale["axes"] == [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    assert dataset["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.5, 1.0, 2.0, 0.65, 0.65]}
    ]
    assert [channel["label"] for channel in ome["omero"]["channels"]] == ["GFP", "mCherry"]


def test_chunk_and_shard_shapes_follow_the_rule_or_the_start(tmp_path: Path) -> None:
    import zarr

    frames = noisy(10, (2048, 2048), "uint16")[:, :100]
    with StreamWriter(
        tmp_path / "rule", "c", {"axes": "TYX"}, dtype="uint16", frame_shape=(100, 2048),
        format="ome-zarr",
    ) as writer:  # fmt: skip
        writer.write(frames)
    array = zarr.open_array(tmp_path / "rule/c.ome.zarr/0", mode="r")
    assert array.chunks == (1, 100, 2048)  # whole rows, at most about 1 MiB
    assert array.shards == (327, 100, 2048)  # about 128 MiB a shard
    with StreamWriter(
        tmp_path / "chosen", "c", {"axes": "TYX"}, dtype="uint16", frame_shape=(100, 2048),
        format="ome-zarr", chunk_shape=(30, 512), shard_frames=4,
    ) as writer:  # fmt: skip
        writer.write(frames)
    array = zarr.open_array(tmp_path / "chosen/c.ome.zarr/0", mode="r")
    assert (array.chunks, array.shards) == ((1, 30, 512), (4, 120, 2048))
    np.testing.assert_array_equal(array[...], frames)
    assert len(list((tmp_path / "chosen/c.ome.zarr/0/c").iterdir())) == 3


@pytest.mark.parametrize(
    ("axes", "shape", "frame_shape", "codec", "reason", "says"),
    [
        ("CTYX", [None, 2], (8, 8), "none", "bad_format", "order T, C, Z"),
        ("ZTYX", [3, 4], (8, 8), "none", "bad_format", "order T, C, Z"),
        ("CYXS", [2], (8, 8, 3), "none", "bad_format", "one channel axis"),
        ("TYX", None, (8, 8), "lzw", "bad_compression", "unknown compression"),
    ],
)
def test_a_layout_or_codec_ome_zarr_cannot_hold_is_refused_before_anything_is_made(
    tmp_path: Path,
    axes: str,
    shape: list[int | None] | None,
    frame_shape: tuple[int, ...],
    codec: str,
    reason: str,
    says: str,
) -> None:
    with pytest.raises(RefusalError, match=says) as refused:
        StreamWriter(
            tmp_path / "out", "c", {"axes": axes}, dtype="uint8", frame_shape=frame_shape,
            shape=shape, format="ome-zarr", compression=codec,
        )  # fmt: skip
    assert refused.value.reason == reason
    assert not (tmp_path / "out").exists()


KILLED_WRITER = """
import sys
from tests.system.test_compression import noisy
from framesink import StreamWriter

folder, codec, finalizing = sys.argv[1], sys.argv[2], sys.argv[3] == "finalize"
frames = noisy(300, (96, 80), "uint16")
writer = StreamWriter(folder, "k", {"axes": "TYX", "notes": "n"}, dtype="uint16",
                      frame_shape=(96, 80), format="ome-zarr", compression=codec,
                      chunk_shape=(32, 80), shard_frames=7)
for first in range(0, 300, 3):
    writer.write(frames[first:first + 3], [{"delta_t": i} for i in range(first, first + 3)])
    print(first + 3, flush=True)
if finalizing:
    print("finalizing", flush=True)
writer.finalize()
print("finalized", flush=True)
"""


def _kill_writer(folder: Path, codec: str, stop_after: int | None) -> int:
    """Run the writer above; SIGKILL it once it reports ``stop_after`` frames (None:
    as soon as it starts finalizing). Returns the frames it had reported."""
    with subprocess.Popen(
        [
            sys.executable, "-c", KILLED_WRITER, str(folder), codec,
            "finalize" if stop_after is None else "write",
        ],
        stdout=subprocess.PIPE, text=True, cwd=REPOSITORY,
    ) as child:  # fmt: skip
        assert child.stdout is not None
        reported = 0
        for line in child.stdout:
            text = line.strip()
            if text in ("finalized", "finalizing"):
                break
            reported = int(text)
            if stop_after is not None and reported >= stop_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    return reported


@pytest.mark.parametrize(
    ("codec", "stop_after"),
    [("none", 11), ("blosc-lz4", 100), ("zstd", 202), ("deflate", None), ("none", None)],
)
def test_sigkill_mid_shard_or_while_finalizing_keeps_every_reported_frame(
    tmp_path: Path, codec: str, stop_after: int | None
) -> None:
    """Killed with a shard half filled (7 frames a shard, 3 frames a write) or while
    finalizing: recovery keeps at least the frames the writer had reported, each
    pixel-exact, and invents none."""
    reported = _kill_writer(tmp_path, codec, stop_after)
    if (tmp_path / "framesink-journal.jsonl").exists():
        (record,) = recover(tmp_path)
        assert record.reason in ("recovered", "stop")
    document = read_metadata(tmp_path)["framesink"]
    written = document["frames_written"]
    assert reported <= written <= 300
    assert (document["missing_ranges"], document["compression"]) == ([], codec)
    assert document["format"] == "ome-zarr"
    pixels, _ = read_ome_zarr(tmp_path / "k.ome.zarr")
    assert pixels.shape[0] == written
    np.testing.assert_array_equal(pixels, noisy(300, (96, 80), "uint16")[:written])
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("seed", [3, 4])
def test_sigkill_at_a_random_moment_keeps_every_reported_frame(tmp_path: Path, seed: int) -> None:
    stop_after = int(np.random.default_rng(seed).integers(3, 300))
    test_sigkill_mid_shard_or_while_finalizing_keeps_every_reported_frame(
        tmp_path, "blosc-zstd", stop_after
    )


def test_a_shard_index_a_crash_cut_short_still_names_whole_chunks(tmp_path: Path) -> None:
    """The index's checksum disagrees (its last rewrite was cut short): each entry is
    either empty or names a whole chunk, so recovery keeps every frame it names."""
    frames = noisy(5, (16, 16), "uint16")
    writer = StreamWriter(
        tmp_path, "torn", {"axes": "TYX"}, dtype="uint16", frame_shape=(16, 16),
        format="ome-zarr", compression="zstd", shard_frames=8, fsync_interval=None,
    )  # fmt: skip
    writer.write(frames)
    shard = writer.partial_path / "0/c/0/0/0"
    writer._live._close_quietly()
    writer._live.journal.close()
    writer.folder.close()
    with shard.open("r+b") as handle:
        handle.seek(4 * 16)  # entry 4 looks empty, and the checksum no longer matches
        handle.write(b"\xff" * 16)
    (record,) = recover(tmp_path)
    pixels, _ = read_ome_zarr(tmp_path / "torn.ome.zarr")
    np.testing.assert_array_equal(pixels[:4], frames[:4])
    assert (record.frames_written, record.missing_ranges) == (4, [[4, 4]])


@pytest.mark.parametrize("rebooted", [True, False])
def test_a_power_cut_leaves_unwritten_chunks_missing_not_invented(
    tmp_path: Path, rebooted: bool
) -> None:
    """Six frames, three fsynced; the chunks of frames 4 and 5 never reached the disk
    (zeros) though the index names them. They cannot be decoded and are recorded
    missing; frame 3, intact though not fsynced, is kept."""
    frames = noisy(6, (64, 64), "uint16")
    writer = StreamWriter(
        tmp_path, "cut", {"axes": "TYX"}, dtype="uint16", frame_shape=(64, 64),
        fsync_interval=None, format="ome-zarr", compression="blosc-lz4",
    )  # fmt: skip
    writer.write(frames[:3])
    writer.sync()
    writer.write(frames[3:])
    shard = writer.partial_path / "0/c/0/0/0"
    writer._live._close_quietly()
    writer._live.journal.close()
    writer.folder.close()
    index = np.frombuffer(shard.read_bytes()[: 16 * 6], "<u8").reshape(6, 2)
    with shard.open("r+b") as handle:
        for offset, size in index[4:]:
            handle.seek(int(offset))
            handle.write(bytes(int(size)))
    if rebooted:
        import os

        os.utime(tmp_path / "framesink-journal.jsonl", (1000, 1000))
    (record,) = recover(tmp_path)
    pixels, _ = read_ome_zarr(tmp_path / "cut.ome.zarr")
    np.testing.assert_array_equal(pixels[:4], frames[:4])
    assert not pixels[4:].any()
    assert (record.frames_written, record.missing_ranges) == (4, [[4, 5]])


def _start(publisher: Publisher, name: str, **options: Any) -> Any:
    return publisher.start(
        name,
        {"axes": "TYX", "physical_size_x": 0.5},
        output_path=name,
        output_name="cam",
        dtype="uint16",
        frame_shape=(64, 48),
        **options,
    )


def test_the_daemon_default_and_refusals_beside_healthy_acquisitions(
    start_daemon: Any,
) -> None:
    """``--format ome-zarr`` with blosc-lz4, 16-row chunks and 4-frame shards is the
    default; a start overrides it (OME-TIFF among them); starts OME-Zarr cannot hold are
    refused, counted and shown, and nothing is made for them."""
    import zarr

    daemon: DaemonProcess = start_daemon(
        "--format", "ome-zarr", "--compression", "blosc-lz4", "--chunk-shape", "16,48",
        "--shard-frames", "4", socket="pull",
    )  # fmt: skip
    frames = noisy(12, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        runs = {
            "default": _start(publisher, "default"),
            "zstd": _start(publisher, "zstd", compression="zstd", shard_frames=5),
            "tiff": _start(publisher, "tiff", format="ome-tiff", compression="zstd"),
        }
        refused = {
            "order": publisher.start(
                "order",
                {"axes": "ZTYX"},
                output_path="order",
                output_name="cam",
                dtype="uint16",
                frame_shape=(64, 48),
                shape=[None, 5],
            ),
            "codec": _start(publisher, "codec", format="ome-tiff", compression="blosc-lz4"),
            "format": _start(publisher, "format", format="n5"),
            "chunks": _start(publisher, "chunks", chunk_shape=[0, 4]),
        }
        for run in runs.values():
            run.send(frames)
        for acquisition in refused.values():
            acquisition.stop()
        entries = {name: run.stop(wait=20) for name, run in runs.items()}
    for name, entry in entries.items():
        assert entry is not None, name
        assert (entry.state, entry.frames_written) == ("finished", 12)
    assert entries["default"].path.endswith("cam.ome.zarr")
    assert entries["default"].compression == "blosc-lz4"
    status = daemon.status()
    reasons = status.counters.rejected_by_reason
    assert (reasons.get("bad_format"), reasons.get("bad_compression")) == (2, 1)
    assert reasons.get("bad_start") == 1
    for name in refused:
        assert not (daemon.data_root / name).exists()
    for name, reason in (("order", "bad_format"), ("codec", "bad_compression")):
        entry = daemon.client.acquisition(name)
        assert entry is not None
        assert (entry.state, entry.refusal) == ("refused", reason)
    default = zarr.open_array(daemon.data_root / "default/cam.ome.zarr/0", mode="r")
    assert (default.chunks, default.shards) == ((1, 16, 48), (4, 64, 48))
    zstd = zarr.open_array(daemon.data_root / "zstd/cam.ome.zarr/0", mode="r")
    assert zstd.shards == (5, 64, 48)
    for name in ("default", "zstd"):
        pixels, attributes = read_ome_zarr(daemon.data_root / name / "cam.ome.zarr")
        np.testing.assert_array_equal(pixels, frames)
        scale = attributes["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        assert scale[0]["scale"][-1] == 0.5
    np.testing.assert_array_equal(read_tiff(daemon.data_root / "tiff/cam.ome.tiff")[1], frames)
    assert daemon.stop() == 0


def test_two_ome_zarr_and_one_ome_tiff_at_once_through_a_ring_then_sigkill_and_restart(
    start_daemon: Any, tmp_path: Path
) -> None:
    """Three acquisitions at once, two OME-Zarr (one from a shared-memory ring) and one
    OME-TIFF; the daemon is SIGKILLed with all three open and gaps in one, and the
    restarted daemon recovers each, pixel-exact."""
    root = tmp_path / "root"
    daemon: DaemonProcess = start_daemon(data_root=root, socket="pull")
    frames = noisy(40, (64, 48), "uint16")
    with (
        Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher,
        Publisher(
            daemon.ingest, control=daemon.control, kind="push", shared_memory=16 * frames[0].nbytes
        ) as ring_publisher,
    ):
        zarr_gap = _start(publisher, "zarr_gap", format="ome-zarr", compression="zstd",
                          shard_frames=6)  # fmt: skip
        zarr_ring = _start(ring_publisher, "zarr_ring", format="ome-zarr", shard_frames=9)
        tiff = _start(publisher, "tiff")
        zarr_gap.send(frames[:25], chunk=5)
        zarr_gap.send(frames[30:], index=30)
        for frame in frames:
            zarr_ring.send(frame)
        tiff.send(frames)
        daemon.wait_for(
            lambda s: all(
                (e := s.entry(name)) is not None and e.frames_written == count
                for name, count in (("zarr_gap", 35), ("zarr_ring", 40), ("tiff", 40))
            )
        )
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    restarted: DaemonProcess = start_daemon(data_root=root)
    restarted.wait_for(lambda s: not s.recovering)
    record = read_metadata(root / "zarr_gap")["framesink"]
    assert (record["reason"], record["frames_written"], record["missing_ranges"]) == (
        "recovered",
        35,
        [[25, 29]],
    )
    pixels, _ = read_ome_zarr(root / "zarr_gap/cam.ome.zarr")
    np.testing.assert_array_equal(pixels[:25], frames[:25])
    np.testing.assert_array_equal(pixels[30:], frames[30:])
    assert not pixels[25:30].any()
    np.testing.assert_array_equal(read_ome_zarr(root / "zarr_ring/cam.ome.zarr")[0], frames)
    np.testing.assert_array_equal(read_tiff(root / "tiff/cam.ome.tiff")[1], frames)
    for name in ("zarr_gap", "zarr_ring", "tiff"):
        assert read_metadata(root / name)["framesink"]["reason"] == "recovered"
    assert restarted.stop() == 0


def test_sigterm_finalizes_open_ome_zarr_acquisitions(start_daemon: Any) -> None:
    daemon: DaemonProcess = start_daemon("--format", "ome-zarr", socket="pull")
    frames = noisy(30, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        runs = [_start(publisher, "a", compression="blosc-zstd"), _start(publisher, "b")]
        for run in runs:
            run.send(frames)
    daemon.wait_for(lambda s: s.counters.frames_received == 60)
    assert daemon.stop(signal.SIGTERM) == 0
    for name in ("a", "b"):
        record = read_metadata(daemon.data_root / name)["framesink"]
        assert (record["reason"], record["frames_written"]) == ("shutdown", 30)
        np.testing.assert_array_equal(
            read_ome_zarr(daemon.data_root / name / "cam.ome.zarr")[0], frames
        )


def test_a_running_ome_zarr_reads_as_it_is_and_stop_metadata_reaches_the_group(
    tmp_path: Path,
) -> None:
    """While it runs, the partial folder opens in zarr-python: written frames as sent,
    the rest as 0; at finalize the stop's metadata joins the group's attributes."""
    import zarr

    frames = noisy(9, (40, 32), "uint16")
    writer = StreamWriter(
        tmp_path, "live", {"axes": "TZYX", "laser": "488"}, dtype="uint16",
        frame_shape=(40, 32), shape=[3, 3], format="ome-zarr", compression="zstd",
        shard_frames=2,
    )  # fmt: skip
    writer.write(frames[:5])
    running = zarr.open_array(writer.partial_path / "0", mode="r")
    assert running.shape == (3, 3, 40, 32)  # bounded: the declared shape from the start
    pixels = np.asarray(running[...]).reshape(9, 40, 32)
    np.testing.assert_array_equal(pixels[:5], frames[:5])
    assert not pixels[5:].any()
    writer.write(frames[5:])
    writer.finalize(metadata={"laser": "561", "notes": "stop notes"})
    pixels, attributes = read_ome_zarr(tmp_path / "live.ome.zarr")
    np.testing.assert_array_equal(pixels.reshape(9, 40, 32), frames)
    assert attributes["laser"] == "561"
    assert "notes" not in attributes
    assert read_metadata(tmp_path)["notes"] == "stop notes"


def test_an_unbounded_running_ome_zarr_grows_with_each_fsync(tmp_path: Path) -> None:
    import zarr

    frames = noisy(7, (16, 16), "uint8")
    writer = StreamWriter(
        tmp_path, "grow", {"axes": "TYX"}, dtype="uint8", frame_shape=(16, 16),
        format="ome-zarr", fsync_interval=None,
    )  # fmt: skip
    writer.write(frames[:3])
    writer.sync()
    array = zarr.open_array(writer.partial_path / "0", mode="r")
    assert array.shape == (3, 16, 16)
    np.testing.assert_array_equal(array[...], frames[:3])
    writer.write(frames[3:])
    writer.sync()
    assert zarr.open_array(writer.partial_path / "0", mode="r").shape == (7, 16, 16)
    writer.finalize()
