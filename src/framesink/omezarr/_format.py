"""OME-Zarr as a storage format: how its image is made and how a crash's leftover is read."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import Compression, FrameLayout, OutputFiles, StorageOptions
from ..store import Folder, Journal, JournalState, read_exactly
from ._codecs import HELD, chunk_decoder
from ._documents import ARRAY_PATH, DOCUMENT, shard_geometry
from ._grid import FrameSpot, ShardGrid, check_ngff_axes
from ._image import ZarrImage
from ._shards import ShardIndex

log = logging.getLogger(__name__)


class OmeZarrFormat:
    """A Zarr v3 group with NGFF 0.5 attributes and one sharded array at path ``0``."""

    name = "ome-zarr"
    suffix = ".ome.zarr"
    record_aliases: tuple[str, ...] = ()
    compressions = HELD

    def check_layout(self, layout: FrameLayout, acquisition: str | None = None) -> None:
        check_ngff_axes(layout.axes, acquisition)

    def create(
        self,
        folder: Folder,
        files: OutputFiles,
        layout: FrameLayout,
        options: StorageOptions,
        journal: Journal,
    ) -> ZarrImage:
        return ZarrImage(folder, files, layout, options, ShardGrid.create(layout, options))

    def open_interrupted(
        self, folder: Folder, source: str, state: JournalState
    ) -> InterruptedZarr | None:
        header = state.header
        layout = FrameLayout.create(header.axes, header.dtype, header.frame_shape, header.shape)
        codec = Compression(header.options.get("compression", Compression.NONE))
        try:
            array = folder.open_subfolder(f"{source}/{ARRAY_PATH}")
        except OSError:
            return None
        try:
            grid = _grid_on_disk(array, layout)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("%s: the array's %s cannot be read (%s)", source, DOCUMENT, exc)
            array.close()
            return None
        return InterruptedZarr(array, grid, codec, state)


def _grid_on_disk(array: Folder, layout: FrameLayout) -> ShardGrid:
    """The chunk and shard geometry the array was written with (from its document)."""
    with array.open_text(DOCUMENT) as handle:
        shard, chunk = shard_geometry(json.load(handle))
    leading = len(layout.leading_shape)
    return ShardGrid(layout, chunk[-2], chunk[-1], tuple(int(n) for n in shard[:leading]))


@dataclass(frozen=True)
class _OpenShard:
    key: str
    descriptor: int
    index: ShardIndex

    @classmethod
    def open(cls, array: Folder, key: str, chunks: int) -> _OpenShard:
        descriptor = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=array.fd)
        try:
            index = ShardIndex.read(descriptor, chunks)
        except BaseException:
            os.close(descriptor)
            raise
        if not index.intact:
            log.warning("%s: the shard's index checksum differs; each entry is checked", key)
        return cls(key, descriptor, index)


class InterruptedZarr:
    """A partial OME-Zarr: its first ``frames`` frames are stored whole or were missing.

    Frames past the last fsync (``synced``) are decoded as well: after a power cut their
    chunks may be zeros the index names, and such a frame never reached the disk.
    """

    def __init__(
        self, array: Folder, grid: ShardGrid, codec: Compression, state: JournalState
    ) -> None:
        self.array = array
        self.grid = grid
        self.frame_bytes = grid.layout.frame_bytes
        self._decode = chunk_decoder(codec)
        self._open: _OpenShard | None = None
        self.frames = self._count(state)

    def _count(self, state: JournalState) -> int:
        missing = sorted((first, last) for first, last in state.missing_ranges)
        frames, journaled = 0, state.frames or 0
        while frames < journaled:
            gap = next((gap for gap in missing if gap[0] <= frames <= gap[1]), None)
            if gap is not None:
                frames = min(journaled, gap[1] + 1)
                continue
            if not self._readable(frames, verify=frames >= state.synced):
                break
            frames += 1
        return frames

    def _readable(self, index: int, *, verify: bool) -> bool:
        try:
            spot, shard = self._shard_of(index)
        except OSError:
            return False
        first = spot.position * self.grid.chunks_per_frame
        if not shard.index.stored(first, self.grid.chunks_per_frame):
            return False
        if not verify:
            return True
        try:
            self._frame(index)
        except Exception as exc:  # noqa: BLE001 - whatever the codec raises on torn data
            log.warning("frame %d does not decode (%s); kept up to it", index, exc)
            return False
        return True

    def _shard_of(self, index: int) -> tuple[FrameSpot, _OpenShard]:
        spot = self.grid.locate(index)
        key = self.grid.shard_key(spot.shard)
        if self._open is None or self._open.key != key:
            self._close_shard()
            self._open = _OpenShard.open(self.array, key, self.grid.chunks_per_shard)
        return spot, self._open

    def _frame(self, index: int) -> np.ndarray[Any, Any]:
        """Frame ``index`` as it was sent (rows, columns[, samples])."""
        grid = self.grid
        spot, shard = self._shard_of(index)
        first = spot.position * grid.chunks_per_frame
        samples = (grid.samples,) if grid.samples else ()
        planes = np.empty((*samples, *grid.shard_shape[-2:]), grid.layout.dtype)
        chunk = 0
        for top in range(0, grid.bands * grid.chunk_rows, grid.chunk_rows):
            for left in range(0, grid.tiles * grid.chunk_columns, grid.chunk_columns):
                offset, size = (int(n) for n in shard.index.entries[first + chunk])
                stored = np.empty(size, np.uint8)
                if not read_exactly(shard.descriptor, offset, stored):
                    raise ValueError(f"chunk {first + chunk} ends past the shard's end")
                decoded = np.frombuffer(self._decode(stored.tobytes()), grid.layout.dtype)
                tile = planes[..., top : top + grid.chunk_rows, left : left + grid.chunk_columns]
                tile[...] = decoded.reshape(tile.shape)
                chunk += 1
        rows, columns = grid.layout.frame_shape[:2]
        frame = planes[..., :rows, :columns]
        return np.moveaxis(frame, 0, -1) if grid.samples else frame

    def read(self, first: int, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
        frames = into.reshape(-1, self.frame_bytes)
        if first + len(frames) > self.frames:
            return False
        layout = self.grid.layout
        for offset, frame in enumerate(frames):
            frame.view(layout.dtype).reshape(layout.frame_shape)[:] = self._decoded(first + offset)
        return True

    def _decoded(self, index: int) -> np.ndarray[Any, Any]:
        try:
            return self._frame(index)
        except Exception as exc:  # noqa: BLE001 - a frame a power loss left unwritten
            log.warning("frame %d cannot be decoded (%s); read as zeros", index, exc)
            return np.zeros(self.grid.layout.frame_shape, self.grid.layout.dtype)

    def _close_shard(self) -> None:
        if self._open is not None:
            os.close(self._open.descriptor)
            self._open = None

    def close(self) -> None:
        self._close_shard()
        self.array.close()
