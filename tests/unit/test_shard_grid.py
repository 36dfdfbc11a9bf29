"""Where frames go in a sharded OME-Zarr: shapes NGFF accepts, chunks about 1 MiB of
whole rows, shards whose frames are consecutive (exactly one shard is open at a time)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framesink.core import FrameLayout, RefusalError, StorageOptions
from framesink.omezarr import ShardGrid
from framesink.omezarr._shards import ShardFile, ShardIndex
from framesink.store import Folder


def _grid(
    axes: str,
    frame_shape: tuple[int, ...],
    shape: list[int | None] | None = None,
    dtype: str = "uint16",
    **options: object,
) -> ShardGrid:
    layout = FrameLayout.create(axes, dtype, frame_shape, shape)
    return ShardGrid.create(layout, StorageOptions.create(**options))  # type: ignore[arg-type]


def test_default_chunks_are_whole_rows_of_about_a_mebibyte_without_a_padded_edge() -> None:
    assert _grid("TYX", (2048, 2048)).chunk_shape == (1, 256, 2048)
    assert _grid("TYX", (1200, 1920)).chunk_shape == (1, 240, 1920)  # 240 divides 1200
    assert _grid("TYX", (1021, 1024)).chunk_shape == (1, 512, 1024)  # a prime: padded edge
    assert _grid("TYX", (64, 48)).chunk_shape == (1, 64, 48)
    assert _grid("TYXS", (100, 80, 3), dtype="uint8").chunk_shape == (1, 3, 100, 80)


def test_default_shards_hold_about_128_mib_and_at_most_4096_chunks() -> None:
    assert _grid("TYX", (2048, 2048)).shard_shape == (16, 2048, 2048)
    assert _grid("TYX", (16, 16), dtype="uint8").shard_shape == (4096, 16, 16)
    tczyx = _grid("TCZYX", (2048, 2048), [None, 2, 5])
    assert tczyx.shard_shape == (1, 2, 5, 2048, 2048)  # Z whole, then C whole: 10 frames
    assert _grid("TZYX", (2048, 2048), [None, 40]).shard_shape == (1, 16, 2048, 2048)


def test_the_start_chooses_chunks_and_shards() -> None:
    grid = _grid("TYX", (100, 2048), chunk_shape=[30, 512], shard_frames=4)
    assert (grid.chunk_shape, grid.shard_shape) == ((1, 30, 512), (4, 120, 2048))
    assert grid.chunks_per_frame == 16
    assert _grid("TYX", (10, 10), chunk_shape=[64, 64]).chunk_shape == (1, 10, 10)


def test_array_axes_follow_ngff_and_rgb_samples_become_a_channel_axis() -> None:
    assert _grid("TZYXS", (8, 8, 3), [None, 4], dtype="uint8").axes == ("t", "c", "z", "y", "x")
    assert _grid("YX", (8, 8)).axes == ("y", "x")
    assert _grid("TZYXS", (8, 8, 3), [None, 4], dtype="uint8").shape(8) == (2, 3, 4, 8, 8)


@pytest.mark.parametrize("axes", ["CTYX", "ZCYX", "TZCYX", "CYXS", "TCYXS"])
def test_axes_ngff_cannot_order_are_refused_as_bad_format(axes: str) -> None:
    sizes: list[int | None] = [None, *[2] * (len(axes.split("YX", maxsplit=1)[0]) - 1)]
    shape = (8, 8, 3) if axes.endswith("S") else (8, 8)
    with pytest.raises(RefusalError) as refused:
        _grid(axes, shape, sizes, dtype="uint8")
    assert refused.value.reason == "bad_format"


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    shard_frames=st.integers(1, 40),
)
def test_each_shard_holds_a_run_of_consecutive_frames_in_order(
    sizes: list[int], shard_frames: int
) -> None:
    axes = "TCZ"[: 1 + len(sizes)] + "YX"
    grid = _grid(axes, (4, 4), [None, *sizes], shard_frames=shard_frames)
    seen: dict[tuple[int, ...], list[int]] = {}
    order: list[tuple[int, ...]] = []
    for index in range(3 * int(np.prod(sizes or [1])) * max(1, shard_frames)):
        spot = grid.locate(index)
        positions = seen.setdefault(spot.shard, [])
        if not positions:
            order.append(spot.shard)
        else:
            assert order[-1] == spot.shard, "a shard's frames are consecutive"
        assert spot.position == len(positions)
        positions.append(index)
        assert 1 <= spot.shard_frames <= int(np.prod(grid.box))
    for shard in order[:-1]:
        assert len(seen[shard]) == grid.locate(seen[shard][0]).shard_frames


def test_an_index_cut_short_keeps_each_entry_either_empty_or_whole(tmp_path: Path) -> None:
    with Folder.at(tmp_path) as folder:
        shard = ShardFile(folder, "shard", 4, direct=False)
        try:
            shard.append(0, [b"abc", b"defg"])
            shard.write_index()
            descriptor = shard.descriptor
            index = ShardIndex.read(descriptor, 4)
            assert index.intact
            assert index.stored(0, 2)
            assert not index.stored(0, 3)
            assert index.entries[:2].tolist() == [[68, 3], [71, 4]]
            os.pwrite(descriptor, b"\x00", 16 * 4)  # the checksum
            assert not ShardIndex.read(descriptor, 4).intact
            os.ftruncate(descriptor, 73)  # chunk 0 whole (68-71), chunk 1 cut
            index = ShardIndex.read(descriptor, 4)
            assert (index.stored(0, 1), index.stored(1, 1)) == (True, False)
        finally:
            shard.close()


def test_direct_shards_start_their_chunks_on_a_page(tmp_path: Path) -> None:
    with Folder.at(tmp_path) as folder:
        shard = ShardFile(folder, "shard", 4, direct=True)
        try:
            chunk = np.arange(2048, dtype=np.uint16)
            shard.append(0, [chunk, chunk])
            shard.finish()
            index = ShardIndex.read(shard.descriptor, 4)
            assert index.entries[:2].tolist() == [[4096, 4096], [8192, 4096]]
            data = (tmp_path / "shard").read_bytes()
            assert data[4096:8192] == chunk.tobytes()
        finally:
            shard.close()
