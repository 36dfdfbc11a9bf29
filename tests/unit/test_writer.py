"""Round trips through the streaming writer and the batch function, read back for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from framesink import MetaData, OutputParameters, StreamWriter, save_config_frames
from framesink.core import FrameChunk
from framesink.tiff import dimension_order

from ..helpers import pattern, read_metadata, read_tiff, validate_ome

DTYPES = ["uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"]
LAYOUTS: list[tuple[str, tuple[int, ...]]] = [
    ("YX", (12, 10)),
    ("TYX", (5, 12, 10)),
    ("ZYX", (4, 12, 10)),
    ("CZYX", (2, 3, 12, 10)),
    ("TCZYX", (2, 3, 2, 12, 10)),
    ("ZTYX", (3, 2, 12, 10)),
    ("CTZYX", (2, 2, 3, 12, 10)),
    ("TZCYX", (2, 3, 2, 12, 10)),
    ("TYXS", (4, 12, 10, 3)),
]


def _frames(shape: tuple[int, ...], dtype: str) -> np.ndarray[Any, Any]:
    return np.random.default_rng(1).integers(0, 100, size=shape).astype(dtype)


def _check_ome(xml: str, axes: str, shape: tuple[int, ...], dtype: str) -> None:
    ome = validate_ome(xml)
    pixels = ome.images[0].pixels
    sizes = dict(zip(axes, shape, strict=True))
    samples = sizes.get("S", 1)
    assert pixels.dimension_order.value == dimension_order(axes)
    assert (pixels.size_x, pixels.size_y) == (sizes["X"], sizes["Y"])
    assert pixels.size_z == sizes.get("Z", 1)
    assert pixels.size_t == sizes.get("T", 1)
    assert pixels.size_c == sizes.get("C", 1) * samples
    assert pixels.channels[0].samples_per_pixel == samples
    expected_type = {"float32": "float", "float64": "double"}.get(dtype, dtype)
    assert pixels.type.value == expected_type


@pytest.mark.parametrize(("axes", "shape"), LAYOUTS)
def test_batch_round_trip_layouts(tmp_path: Path, axes: str, shape: tuple[int, ...]) -> None:
    dtype = "uint8" if axes.endswith("S") else "uint16"
    frames = _frames(shape, dtype)
    config = MetaData(axes=axes, notes="not embedded", objective="60x", stage={"x": 1.5})
    save_config_frames(
        config, frames, OutputParameters(output_path=tmp_path / "out", output_name="img")
    )
    kind, pixels, xml = read_tiff(tmp_path / "out" / "img.ome.tiff")
    assert kind == "ome"
    assert pixels.shape == shape
    np.testing.assert_array_equal(pixels, frames)
    _check_ome(xml, axes, shape, dtype)
    assert "not embedded" not in xml
    assert '"60x"' in xml
    document = read_metadata(tmp_path / "out")
    assert {k: document[k] for k in ("axes", "notes", "objective", "stage")} == config.model_dump()
    assert document["framesink"]["shape"] == list(shape)
    assert document["framesink"]["complete"] is True


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_round_trip_dtypes(tmp_path: Path, dtype: str) -> None:
    frames = _frames((3, 8, 9), dtype)
    save_config_frames(
        MetaData(axes="TYX"), frames, OutputParameters(output_path=tmp_path, output_name="d")
    )
    kind, pixels, xml = read_tiff(tmp_path / "d.ome.tiff")
    assert (kind, pixels.dtype, pixels.shape) == ("ome", np.dtype(dtype), (3, 8, 9))
    np.testing.assert_array_equal(pixels, frames)
    _check_ome(xml, "TYX", (3, 8, 9), dtype)


def test_seed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = MetaData(axes="TYX", notes="Example metadata")
    frames = np.random.rand(10, 256, 256)
    save_config_frames(
        config, frames, OutputParameters(output_path="./output", output_name="example")
    )
    with tifffile.TiffFile("output/example.ome.tiff") as tiff:
        assert tiff.is_bigtiff
        assert tiff.series[0].shape == (10, 256, 256)
        np.testing.assert_array_equal(tiff.series[0].asarray(), frames)
    document = json.loads(Path("output/metadata.json").read_text())
    assert document["axes"] == "TYX"
    assert document["notes"] == "Example metadata"


def test_batch_overwrites_like_the_seed(tmp_path: Path) -> None:
    params = OutputParameters(output_path=tmp_path, output_name="same")
    save_config_frames(MetaData(axes="TYX"), np.zeros((2, 4, 4), "uint8"), params)
    save_config_frames(MetaData(axes="TYX"), np.ones((3, 4, 4), "uint8"), params)
    _, pixels, _ = read_tiff(tmp_path / "same.ome.tiff")
    assert pixels.shape == (3, 4, 4)
    assert pixels.min() == 1


@pytest.mark.parametrize(
    ("axes", "frames", "error", "message"),
    [
        ("TYX", np.zeros((4, 4), "uint8"), ValueError, "need 3"),
        ("TCZYX", np.zeros((2, 4, 4), "uint8"), ValueError, "need 5"),
        ("TYX", np.zeros((2, 4, 4), "complex64"), ValueError, "dtype must be one of"),
        ("TYXS", np.zeros((2, 4, 4, 7), "uint8"), ValueError, "must be 3 or 4"),
    ],
)
def test_batch_rejects_bad_frames_before_creating_files(
    tmp_path: Path, axes: str, frames: np.ndarray[Any, Any], error: type[Exception], message: str
) -> None:
    target = tmp_path / "never"
    with pytest.raises(error, match=message):
        save_config_frames(
            MetaData(axes=axes), frames, OutputParameters(output_path=target, output_name="x")
        )
    assert not target.exists()


def test_batch_rejects_a_file_as_output_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        save_config_frames(
            MetaData(axes="TYX"),
            np.zeros((1, 2, 2), "uint8"),
            OutputParameters(output_path=blocker, output_name="x"),
        )
    assert blocker.read_text() == "in the way"


def test_batch_rejects_names_with_separators(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        save_config_frames(
            MetaData(axes="TYX"),
            np.zeros((1, 2, 2), "uint8"),
            OutputParameters(output_path=tmp_path, output_name="a/b"),
        )
    assert list(tmp_path.iterdir()) == []


def _open(folder: Path, **kwargs: Any) -> StreamWriter:
    options: dict[str, Any] = {"dtype": "uint16", "frame_shape": (6, 5)} | kwargs
    metadata = options.pop("metadata", {"axes": "TYX"})
    return StreamWriter(folder, "acq", metadata, **options)


def test_stream_uses_temporary_name_until_final(tmp_path: Path) -> None:
    writer = _open(tmp_path)
    writer.write(pattern(3, (6, 5), "uint16"))
    assert (tmp_path / "acq.ome.tiff.partial").exists()
    assert not (tmp_path / "acq.ome.tiff").exists()
    assert not (tmp_path / "metadata.json").exists()
    record = writer.finalize()
    assert (tmp_path / "acq.ome.tiff").exists()
    assert not (tmp_path / "acq.ome.tiff.partial").exists()
    assert not (tmp_path / "framesink-journal.jsonl").exists()
    assert writer.finalize() is record


def test_stream_chunks_of_any_size_and_gaps(tmp_path: Path) -> None:
    frames = pattern(10, (6, 5), "uint16")
    with _open(tmp_path) as writer:
        writer.write(frames[0])
        writer.write(frames[1:4])
        writer.skip(2)
        writer.write(frames[6:10])
    _, pixels, xml = read_tiff(tmp_path / "acq.ome.tiff")
    expected = frames.copy()
    expected[4:6] = 0
    np.testing.assert_array_equal(pixels, expected)
    record = read_metadata(tmp_path)["framesink"]
    assert record["missing_ranges"] == [[4, 5]]
    assert (record["frames_written"], record["frames_missing"]) == (8, 2)
    assert record["complete"] is False
    validate_ome(xml)


def test_unbounded_first_axis_is_padded_to_a_whole_volume(tmp_path: Path) -> None:
    frames = pattern(7, (6, 5), "uint16")
    writer = _open(tmp_path, metadata={"axes": "TZYX"}, shape=[None, 3])
    writer.write(frames)
    record = writer.finalize("shutdown")
    assert record.shape == [3, 3, 6, 5]
    assert record.missing_ranges == [[7, 8]]
    assert record.reason == "shutdown"
    kind, pixels, xml = read_tiff(tmp_path / "acq.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (3, 3, 6, 5))
    np.testing.assert_array_equal(pixels.reshape(9, 6, 5)[:7], frames)
    _check_ome(xml, "TZYX", (3, 3, 6, 5), "uint16")


def test_bounded_shape_refuses_extra_frames(tmp_path: Path) -> None:
    writer = _open(tmp_path, metadata={"axes": "ZYX"}, shape=[2])
    writer.write(pattern(2, (6, 5), "uint16"))
    assert writer.is_full
    with pytest.raises(ValueError, match="exceed the shape"):
        writer.write(pattern(1, (6, 5), "uint16"))
    assert writer.finalize().complete
    assert read_tiff(tmp_path / "acq.ome.tiff")[1].shape == (2, 6, 5)


def test_frame_metadata_becomes_planes_and_sidecar(tmp_path: Path) -> None:
    writer = _open(tmp_path)
    meta: list[dict[str, Any] | None] = [
        {"delta_t": 0.0, "exposure_time": 0.01, "position_x": 1.5, "camera_temp": -10},
        None,
        {"delta_t": 0.2, "position_z": 3.0},
    ]
    writer.write(pattern(3, (6, 5), "uint16"), meta)
    record = writer.finalize()
    assert record.files.sidecar == "acq.frames.jsonl"
    lines = [json.loads(line) for line in (tmp_path / "acq.frames.jsonl").read_text().splitlines()]
    assert lines == [{"index": 0, **meta[0]}, {"index": 2, **meta[2]}]  # type: ignore[dict-item]
    _, _, xml = read_tiff(tmp_path / "acq.ome.tiff")
    planes = validate_ome(xml).images[0].pixels.planes
    assert [(p.the_t, p.delta_t, p.exposure_time, p.position_x, p.position_z) for p in planes] == [
        (0, 0.0, 0.01, 1.5, None),
        (2, 0.2, None, None, 3.0),
    ]


def test_plane_elements_stop_at_the_cap_and_the_sidecar_keeps_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framesink.tiff._ome.MAX_OME_PLANES", 4)
    writer = _open(tmp_path)
    writer.write(pattern(7, (6, 5), "uint16"), [{"delta_t": 0.5 * i} for i in range(7)])
    writer.finalize()
    _, _, xml = read_tiff(tmp_path / "acq.ome.tiff")
    planes = validate_ome(xml).images[0].pixels.planes
    assert [p.delta_t for p in planes] == [0.0, 0.5, 1.0, 1.5]
    assert "Plane elements stop after 4 frames" in xml
    lines = (tmp_path / "acq.frames.jsonl").read_text().splitlines()
    assert [json.loads(line)["delta_t"] for line in lines] == [0.5 * i for i in range(7)]


def test_stop_metadata_is_merged(tmp_path: Path) -> None:
    writer = _open(tmp_path, metadata={"axes": "TYX", "notes": "start", "user": "ada"})
    writer.write(pattern(1, (6, 5), "uint16"))
    writer.finalize(metadata={"notes": "final notes", "result": 3})
    document = read_metadata(tmp_path)
    assert (document["notes"], document["user"], document["result"]) == ("final notes", "ada", 3)


def test_stream_refuses_to_overwrite(tmp_path: Path) -> None:
    _open(tmp_path).finalize()
    before = (tmp_path / "acq.ome.tiff").read_bytes()
    with pytest.raises(FileExistsError, match="already holds"):
        _open(tmp_path)
    assert (tmp_path / "acq.ome.tiff").read_bytes() == before


@pytest.mark.parametrize(
    ("frames", "error", "message"),
    [
        (np.zeros((2, 6, 4), "uint16"), ValueError, "must have shape"),
        (np.zeros((2, 6, 5), "uint8"), TypeError, "must be uint16"),
    ],
)
def test_stream_rejects_wrong_frames(
    tmp_path: Path, frames: np.ndarray[Any, Any], error: type[Exception], message: str
) -> None:
    writer = _open(tmp_path)
    with pytest.raises(error, match=message):
        writer.write(frames)
    assert writer.frames_in_file == 0
    assert not (tmp_path / "acq.ome.tiff").exists()
    writer.finalize("abort")


def test_reserved_metadata_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        _open(tmp_path, metadata={"axes": "TYX", "framesink": 1})
    assert list(tmp_path.iterdir()) == []


def test_empty_acquisition_still_gives_a_valid_file(tmp_path: Path) -> None:
    record = _open(tmp_path).finalize("abort")
    assert (record.frames_written, record.missing_ranges, record.complete) == (0, [[0, 0]], False)
    kind, pixels, xml = read_tiff(tmp_path / "acq.ome.tiff")
    assert (kind, pixels.shape) == ("ome", (6, 5))  # tifffile squeezes length-1 axes
    _check_ome(xml, "TYX", (1, 6, 5), "uint16")


def test_physical_sizes_and_channel_names_map_to_ome(tmp_path: Path) -> None:
    frames = _frames((2, 4, 4), "uint8")
    config = MetaData(
        axes="CYX", physical_size_x=0.1, physical_size_y=0.1, channel_names=["GFP", "RFP"]
    )
    save_config_frames(config, frames, OutputParameters(output_path=tmp_path, output_name="c"))
    _, _, xml = read_tiff(tmp_path / "c.ome.tiff")
    pixels = validate_ome(xml).images[0].pixels
    assert pixels.physical_size_x == 0.1
    assert [c.name for c in pixels.channels] == ["GFP", "RFP"]


def test_planes_carry_the_right_t_c_z_for_every_frame(tmp_path: Path) -> None:
    writer = _open(tmp_path, metadata={"axes": "ZTCYX"}, shape=[None, 2, 3])
    writer.write(pattern(12, (6, 5), "uint16"), [{"exposure_time": 0.001 * i} for i in range(12)])
    writer.finalize()
    _, pixels, xml = read_tiff(tmp_path / "acq.ome.tiff")
    assert pixels.shape == (2, 2, 3, 6, 5)
    pixels_meta = validate_ome(xml).images[0].pixels
    assert pixels_meta.dimension_order.value == "XYCTZ"
    for index, plane in enumerate(pixels_meta.planes):
        z, t, c = np.unravel_index(index, (2, 2, 3))
        assert (plane.the_z, plane.the_t, plane.the_c) == (z, t, c)
        assert plane.exposure_time == pytest.approx(0.001 * index)


def test_aligned_buffers_go_to_the_file_without_a_staging_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames in page-aligned memory (a shared ring) are written with one gathered write."""
    import mmap

    from framesink.store import _pixels

    gathered: list[int] = []
    real = _pixels._write_vectors

    def spy(fd: int, offset: int, buffers: Any) -> None:
        gathered.append(len(buffers))
        real(fd, offset, buffers)

    monkeypatch.setattr(_pixels, "_write_vectors", spy)
    memory = mmap.mmap(-1, 8 * 4096)
    ring = np.frombuffer(memory, np.uint16).reshape(8, 64, 32)
    ring[:] = pattern(8, (64, 32), "uint16")
    writer = StreamWriter(tmp_path, "ring", {"axes": "TYX"}, dtype="uint16", frame_shape=(64, 32))
    writer.write_batch([FrameChunk(ring[i : i + 1]) for i in (0, 2, 4, 6)])
    writer.finalize()
    assert writer.direct_io, "ext4 and xfs take O_DIRECT; this test needs such a disk"
    assert gathered == [4]
    np.testing.assert_array_equal(read_tiff(tmp_path / "ring.ome.tiff")[1], ring[::2])


def test_adjacent_missing_ranges_are_one_range_and_counting_them_costs_nothing(
    tmp_path: Path,
) -> None:
    """Review 2, item 4: gaps made writing quadratic (every batch summed every range)."""
    from framesink.core import FrameLayout, Ledger

    ledger = Ledger("a", FrameLayout.create("TYX", "uint8", [2, 2], None))
    for first in range(0, 2000, 2):  # a written frame, then a one-frame gap: 1000 ranges
        ledger.note_written(1)
        ledger.note_missing(first + 1, 1)
    for first in range(2000, 3000):  # a SUB overload losing 1000 messages in a row
        ledger.note_missing(first, 1)
    assert len(ledger.missing_ranges) == 1000
    assert ledger.missing_ranges[-1] == [1999, 2999]
    assert ledger.frames_missing == 2000

    class Untouchable(list[list[int]]):
        def __iter__(self) -> Any:
            raise AssertionError("the ranges were walked to count them")

    ledger.missing_ranges = Untouchable(ledger.missing_ranges)
    assert (ledger.frames_missing, ledger.frames_written) == (2000, 1000)

    writer = StreamWriter(tmp_path, "g", {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2))
    for _ in range(50):
        writer.write(np.zeros((1, 2, 2), "uint8"))
        writer.skip(1)
    writer.ledger.missing_ranges = Untouchable(writer.ledger.missing_ranges)
    assert (writer.frames_missing, writer.frames_written) == (50, 50)
    writer.ledger.missing_ranges = list(writer.ledger.missing_ranges[:])
    writer.finalize()
