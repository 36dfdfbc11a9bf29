"""Pixels written beside tifffile: same bytes as tifffile's own contiguous writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from framesink.core import FrameLayout
from framesink.store import Folder
from framesink.store._pixels import DIRECT_ALIGNMENT, STAGING_BYTES, PixelFile, aligned_buffer
from framesink.tiff import DATA_ALIGNMENT, ContiguousSeries

from ..helpers import pattern

DESCRIPTION = "test series"


class PublicApiSeries(ContiguousSeries):
    """A series as it runs when tifffile's internals are not the expected ones."""

    def _tifffile_state_is_known(self, offset: int) -> bool:
        return False


def _tifffile_reference(path: Path, frames: np.ndarray[Any, Any], holes: set[int]) -> bytes:
    """The file tifffile writes itself: one contiguous write per frame, None for holes."""
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, frame in enumerate(frames):
            tif.write(
                None if index in holes else frame,
                shape=frame.shape,
                dtype=frame.dtype,
                contiguous=True,
                align=DATA_ALIGNMENT if index == 0 else None,
                metadata=None,
                description=DESCRIPTION,
                photometric="rgb" if frame.ndim == 3 else "minisblack",
            )
    return path.read_bytes()


def _write_series(
    series: ContiguousSeries, frames: np.ndarray[Any, Any], chunks: list[int], holes: set[int]
) -> None:
    """Holes as holes; runs of other chunks two at a time, as one batch."""
    index = 0
    batch: list[np.ndarray[Any, Any]] = []
    for size in chunks:
        if index in holes:
            if batch:
                series.append(batch)
                batch = []
            series.append_empty(size)
        else:
            batch.append(frames[index : index + size])
        if len(batch) == 2:
            series.append(batch)
            batch = []
        index += size
    if batch:
        series.append(batch)
    series.close()


CASES = [
    # (frame shape, dtype, chunk sizes, hole chunk starts)
    ((64, 48), "uint16", [1, 3, 1, 4, 2], {4}),
    ((60, 50), "uint8", [2, 2, 1], set()),  # 3000 bytes: no O_DIRECT
    ((32, 32, 3), "uint8", [1, 1, 1], {0}),
    ((17, 13), "float64", [5], set()),
    ((64, 64), "uint16", [3, 2], {3}),  # trailing hole
]


@pytest.mark.parametrize("chunk_pages", [8192, 2])
@pytest.mark.parametrize("series_class", [ContiguousSeries, PublicApiSeries])
@pytest.mark.parametrize("direct_io", [True, False])
@pytest.mark.parametrize(("frame_shape", "dtype", "chunks", "holes"), CASES)
def test_series_bytes_equal_tifffile_writing_every_page(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk_pages: int,
    series_class: type[ContiguousSeries],
    direct_io: bool,
    frame_shape: tuple[int, ...],
    dtype: str,
    chunks: list[int],
    holes: set[int],
) -> None:
    monkeypatch.setattr("framesink.tiff._ifds.CHUNK_PAGES", chunk_pages)
    frames = pattern(sum(chunks), frame_shape, dtype)
    hole_frames: set[int] = set()
    start = 0
    for size in chunks:
        if start in holes:
            hole_frames.update(range(start, start + size))
        start += size
    axes = "TYXS" if len(frame_shape) == 3 else "TYX"
    layout = FrameLayout.create(axes, dtype, frame_shape)
    series = series_class(
        Folder.at(tmp_path), "series.tif", layout, description=DESCRIPTION, direct_io=direct_io
    )
    _write_series(series, frames, chunks, holes)
    reference = _tifffile_reference(tmp_path / "reference.tif", frames, hole_frames)
    assert (tmp_path / "series.tif").read_bytes() == reference
    expected = frames.copy()
    expected[sorted(hole_frames)] = 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "series.tif"), expected)


def test_direct_io_is_used_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    layout = FrameLayout.create("TYX", "uint16", (256, 256))
    series = ContiguousSeries(Folder.at(tmp_path), "a.tif", layout, description=DESCRIPTION)
    series.append([pattern(2, (256, 256), "uint16")])
    assert series.is_direct
    series.close()
    odd = FrameLayout.create("TYX", "uint16", (3, 5))
    buffered = ContiguousSeries(Folder.at(tmp_path), "b.tif", odd, description=DESCRIPTION)
    buffered.append([pattern(2, (3, 5), "uint16")])
    assert not buffered.is_direct
    buffered.close()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), pattern(2, (3, 5), "uint16"))


def test_pixel_file_writes_from_unaligned_memory_and_at_unaligned_offsets(tmp_path: Path) -> None:
    path = tmp_path / "pixels.bin"
    path.write_bytes(b"")
    rng = np.random.default_rng(3)
    source = rng.integers(0, 255, 3 * DIRECT_ALIGNMENT * 1000 + 17, dtype=np.uint8)
    unaligned = source[17:]  # 16-byte-ish alignment, as received messages have
    aligned = aligned_buffer(4 * DIRECT_ALIGNMENT)
    aligned[:] = 7
    with closing(PixelFile(Folder.at(path.parent), path.name, direct=True)) as pixels:
        assert pixels.is_direct
        pixels.write_at(0, [unaligned])
        pixels.write_at(unaligned.nbytes, [aligned])
        pixels.write_at(unaligned.nbytes + aligned.nbytes + 3, [source[:5]])
        assert pixels.is_direct
    data = np.fromfile(path, np.uint8)
    np.testing.assert_array_equal(data[: unaligned.nbytes], unaligned)
    assert (data[unaligned.nbytes : unaligned.nbytes + aligned.nbytes] == 7).all()
    np.testing.assert_array_equal(data[-5:], source[:5])
    assert os.path.getsize(path) == unaligned.nbytes + aligned.nbytes + 8


def test_gathered_writes_span_staging_rounds(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"")
    frames = pattern(7, (1536, 2048), "uint16")  # 6 MiB each: 42 MiB, several stagings
    unaligned = [
        np.frombuffer(b"\0" * 16 + frame.tobytes(), np.uint16, offset=16) for frame in frames
    ]
    with closing(PixelFile(Folder.at(path.parent), path.name, direct=True)) as pixels:
        pixels.write_at(DIRECT_ALIGNMENT, unaligned[:1])
        pixels.write_at(DIRECT_ALIGNMENT + frames[0].nbytes, unaligned[1:])
        assert pixels.is_direct
    assert frames.nbytes > 2 * STAGING_BYTES
    written = np.fromfile(path, np.uint16, offset=DIRECT_ALIGNMENT)
    np.testing.assert_array_equal(written, frames.reshape(-1))


FAILING_WRITE = """
import resource, signal, sys
import numpy as np
from framesink.store import Folder
from framesink.store._pixels import PartialWriteError, PixelFile
path, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
source = np.fromfile(path + ".source", np.uint8)
parts = [source[start + 3 : start + 3 + (3 << 20)] for start in range(0, 36 << 20, 3 << 20)]
folder = Folder.at(path.rsplit("/", 1)[0])
pixels = PixelFile(folder, path.rsplit("/", 1)[1], direct=True)
assert pixels.is_direct
try:
    pixels.write_at(0, parts)
except PartialWriteError as exc:
    print(exc.written)
pixels.close()
"""


def test_a_staged_write_that_fails_says_exactly_how_many_bytes_made_it(tmp_path: Path) -> None:
    """The disk fills while one staging buffer is written and the next fills: the bytes
    reported written are exactly those in the file, and they are right."""
    path = tmp_path / "limited.bin"
    path.write_bytes(b"")
    source = np.random.default_rng(5).integers(0, 255, (36 << 20) + 3, dtype=np.uint8)
    source.tofile(f"{path}.source")
    limit = 2 * STAGING_BYTES + 5 * DIRECT_ALIGNMENT  # inside the third staged write
    result = subprocess.run(
        [sys.executable, "-c", FAILING_WRITE, str(path), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(result.stdout) == limit
    np.testing.assert_array_equal(np.fromfile(path, np.uint8), source[3 : 3 + limit])


@pytest.fixture
def disk_with_4k_sectors(tmp_path: Path) -> Iterator[Path]:
    """A real ext4 on a loop device with 4096-byte sectors, as on 4Kn disks."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root (CI runs as root)")
    tools = ("losetup", "mkfs.ext4", "mount", "umount")
    if not all(shutil.which(tool) for tool in tools):
        pytest.skip(f"needs {', '.join(tools)}")
    image = tmp_path / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(64 << 20)
    attached = _run("losetup", "--find", "--show", "--sector-size", "4096", str(image))
    if attached.returncode != 0:
        pytest.skip(f"this machine has no loop devices: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    try:
        for command in (("mkfs.ext4", "-q", "-F", device), ("mount", device, str(mount_point))):
            done = _run(*command)
            assert done.returncode == 0, done.stderr
        yield mount_point
    finally:
        _run("umount", "-l", str(mount_point))
        _run("losetup", "--detach", device)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_4k_sector_disk_falls_back_when_o_direct_refuses_512_byte_alignment(
    disk_with_4k_sectors: Path,
) -> None:
    whole_sectors = FrameLayout.create("TYX", "uint16", (256, 256))
    series = ContiguousSeries(
        Folder.at(disk_with_4k_sectors), "a.tif", whole_sectors, description=""
    )
    series.append([pattern(3, (256, 256), "uint16")])
    assert series.is_direct
    series.close()
    partial_sectors = FrameLayout.create("TYX", "uint16", (8, 160))  # 5 x 512 bytes
    frames = pattern(5, (8, 160), "uint16")
    series = ContiguousSeries(
        Folder.at(disk_with_4k_sectors), "b.tif", partial_sectors, description=""
    )
    series.append([frames[:1]])  # aligned for 512-byte sectors: the kernel says EINVAL
    series.append([frames[1:2], frames[2:]])
    assert not series.is_direct
    series.close()
    np.testing.assert_array_equal(
        tifffile.imread(disk_with_4k_sectors / "a.tif"), pattern(3, (256, 256), "uint16")
    )
    np.testing.assert_array_equal(tifffile.imread(disk_with_4k_sectors / "b.tif"), frames)
