"""The OME-Zarr image of one acquisition while it is written: shards filled in frame order.

Frames are cut into chunks (bands of rows, or tiles); compressed chunks are encoded by
the shared codec pool, a frame per core's worth of tasks, and written in frame order
while the next frames compress, as for compressed OME-TIFF. Memory holds the frames in
flight and one shard's index, never a shard. Shards a frame finished are fsynced at the
next ``sync``; until then their descriptors stay open.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..core import FrameLayout, OutputFiles, StorageOptions
from ..store import Folder, codec_pool, codec_workers, settle, write_json_atomically
from ._codecs import chunk_encoder
from ._documents import ARRAY_PATH, DOCUMENT, array_document, group_document
from ._grid import ShardGrid
from ._shards import Piece, ShardFile

_Pending = collections.deque[list[Future[list[bytes]]]]
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ZarrImage:
    """An :class:`~framesink.store.Image`: a Zarr v3 group with one sharded array.

    Uncompressed chunks are written past the page cache (O_DIRECT) where the options,
    the filesystem and their size allow; compressed ones go through it (at the codec's
    pace the disk is not the limit).
    """

    def __init__(
        self,
        folder: Folder,
        files: OutputFiles,
        layout: FrameLayout,
        options: StorageOptions,
        grid: ShardGrid,
    ) -> None:
        """Create the group ``files.partial`` in ``folder`` (it must not exist)."""
        self.files = files
        self.layout = layout
        self.options = options
        self.grid = grid
        self.frames = 0
        self._encode = chunk_encoder(
            options.compression, options.compression_level, layout.dtype.itemsize
        )
        self._direct = options.direct_io and self._encode is None
        self.is_direct = False
        """True once chunks went past the page cache."""
        self._tasks = codec_workers()
        self._in_flight = max(2, self._tasks)
        self._shard: ShardFile | None = None
        self._lock = threading.Lock()
        self._finished: list[ShardFile] = []
        """Shards complete but not yet fsynced (the next ``sync`` does it)."""
        self._new_folders: list[str] = []
        """Folders below the array created since the last ``sync``."""
        self._published_frames = -1
        self._folder = folder
        self.group = folder.subfolder(files.partial)
        try:
            self.array = self.group.subfolder(ARRAY_PATH)
            self._write_array_document(layout.capacity or 0)
            write_json_atomically(self.group, DOCUMENT, group_document(grid, files.name))
        except BaseException:
            self.group.close()
            shutil.rmtree(files.partial, dir_fd=folder.fd, ignore_errors=True)
            raise

    # -- appending ---------------------------------------------------------------------
    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None:
        """Append frames (first axis = frame number) in order; none is still read when
        this returns. A failed write raises OSError with ``frames`` counting the frames
        whose chunks all reached their shard."""
        frames = (frame for chunk in chunks for frame in chunk)
        try:
            if self._encode is None:
                for frame in frames:
                    self._store(list(self._chunks_of(frame)))
                return
            pending: _Pending = collections.deque()
            try:
                while self._submit(frames, pending):
                    self._store([piece for part in pending[0] for piece in part.result()])
                    pending.popleft()
            finally:
                settle(future for frame in pending for future in frame)
                pending.clear()
        finally:
            if self._shard is not None:
                self._shard.write_index()

    def _submit(self, frames: Iterator[np.ndarray[Any, Any]], pending: _Pending) -> bool:
        """Hand frames to the pool until enough are in flight (one task per core each);
        False when none is left."""
        pool = codec_pool()
        while len(pending) < self._in_flight:
            frame = next(frames, None)
            if frame is None:
                break
            pieces = list(self._chunks_of(frame))
            run = -(-len(pieces) // self._tasks)
            parts = [pieces[start : start + run] for start in range(0, len(pieces), run)]
            pending.append([pool.submit(self._encode_all, part) for part in parts])
        return bool(pending)

    def _encode_all(self, pieces: list[np.ndarray[Any, Any]]) -> list[bytes]:
        assert self._encode is not None
        return [self._encode(piece) for piece in pieces]

    def _chunks_of(self, frame: np.ndarray[Any, Any]) -> Iterator[np.ndarray[Any, Any]]:
        """The frame's chunks in index order, C-contiguous (edge chunks padded with zeros)."""
        grid = self.grid
        planes = np.moveaxis(frame, -1, 0) if grid.samples else frame
        for top in range(0, grid.bands * grid.chunk_rows, grid.chunk_rows):
            for left in range(0, grid.tiles * grid.chunk_columns, grid.chunk_columns):
                piece = planes[..., top : top + grid.chunk_rows, left : left + grid.chunk_columns]
                if piece.shape[-2:] != (grid.chunk_rows, grid.chunk_columns):
                    padded = np.zeros(
                        (*piece.shape[:-2], grid.chunk_rows, grid.chunk_columns), piece.dtype
                    )
                    padded[..., : piece.shape[-2], : piece.shape[-1]] = piece
                    piece = padded
                yield np.ascontiguousarray(piece)

    def _store(self, pieces: Sequence[Piece]) -> None:
        """Write the next frame's chunks to its shard, opening that shard if need be."""
        spot = self.grid.locate(self.frames)
        shard = self._shard_for(spot.shard)
        shard.append(spot.position * self.grid.chunks_per_frame, pieces)
        self.frames += 1
        if spot.position == spot.shard_frames - 1:
            self._finish_shard()

    def append_empty(self, count: int) -> None:
        """Count ``count`` frames that never came: they stay unstored (read as zeros)."""
        while count > 0:
            spot = self.grid.locate(self.frames)
            step = min(count, spot.shard_frames - spot.position)
            self.frames += step
            count -= step
            shard = self._shard
            ends_shard = spot.position + step == spot.shard_frames
            if ends_shard and shard is not None and shard.key == self.grid.shard_key(spot.shard):
                self._finish_shard()

    def _shard_for(self, shard: tuple[int, ...]) -> ShardFile:
        key = self.grid.shard_key(shard)
        if self._shard is not None and self._shard.key == key:
            return self._shard
        if self._shard is not None:
            self._finish_shard()
        folder = key.rpartition("/")[0]
        self._make_folders(folder)
        self._shard = ShardFile(self.array, key, self.grid.chunks_per_shard, direct=self._direct)
        self.is_direct = self._shard.is_direct
        with self._lock:
            self._new_folders.append(folder)
        return self._shard

    def _make_folders(self, path: str) -> None:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            partial = "/".join(parts[:depth])
            try:
                os.mkdir(partial, 0o755, dir_fd=self.array.fd)
            except FileExistsError:
                continue
            with self._lock:
                self._new_folders.append("/".join(parts[: depth - 1]) or ".")

    def _finish_shard(self) -> None:
        shard, self._shard = self._shard, None
        if shard is None:
            return
        try:
            shard.finish()
        finally:
            with self._lock:
                self._finished.append(shard)

    # -- durability and closing --------------------------------------------------------
    def sync(self) -> None:
        """fsync the shards written since the last call and the folders made for them;
        an unbounded acquisition's array document grows to the frames held."""
        with self._lock:
            finished, self._finished = self._finished, []
            folders, self._new_folders = self._new_folders, []
            current = self._shard
        try:
            for shard in (*finished, *([current] if current is not None else [])):
                shard.sync()
            for folder in dict.fromkeys(folders):
                _sync_folder(self.array.fd, folder)
        finally:
            for shard in finished:
                shard.close()
        if self.layout.capacity is None:
            self._write_array_document(self.frames)

    def close(self) -> None:
        """Finish the last shard, give the array its final shape and make it all durable."""
        self._finish_shard()
        self.sync()
        self._write_array_document(self.frames)
        self.array.sync()
        self.group.sync()
        self._release()

    def close_quietly(self) -> None:
        try:
            if self._shard is not None:
                self._shard.write_index()
        except OSError:
            pass
        self._finished.extend([self._shard] if self._shard is not None else [])
        self._shard = None
        for shard in self._finished:
            shard.close()
        self._finished = []
        self._release()

    def _release(self) -> None:
        self.array.close()
        self.group.close()

    def _write_array_document(self, frames: int) -> None:
        """The array's document, shaped to hold ``frames`` frames (whole steps of them)."""
        frames = self.layout.padded_count(frames)
        if frames == self._published_frames:
            return
        write_json_atomically(self.array, DOCUMENT, array_document(self.grid, self.options, frames))
        self._published_frames = frames

    def describe(
        self, metadata: Mapping[str, Any], frame_metadata: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        """The group's NGFF attributes and the acquisition's metadata (per-frame metadata
        stays in the sidecar beside the image)."""
        with self._folder.open_subfolder(self.files.partial) as group:
            write_json_atomically(
                group, DOCUMENT, group_document(self.grid, self.files.name, metadata)
            )


def _sync_folder(parent: int, name: str) -> None:
    descriptor = os.open(name, _FOLDER_FLAGS, dir_fd=parent)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
