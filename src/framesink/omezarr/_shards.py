"""Shard files (Zarr v3 sharding, index first) that are valid at every moment.

A shard starts with its index: one (offset, nbytes) pair per chunk, then a crc32c of
the pairs. framesink creates it with every pair empty (a chunk not written reads as the
fill value), appends chunks after the index, and rewrites the index once the chunks it
names are written. An entry is set once and never changed, so even an index that a
crash cut short names only chunks that are whole: a shard is never torn. Readers
(zarr-python, tensorstore) read a shard being filled like any other.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import crc32c
import numpy as np

from ..store import MEMORY_ALIGNMENT, Folder, PixelFile, write_fully

EMPTY = np.uint64(2**64 - 1)
"""An index entry's offset and nbytes for a chunk that is not stored."""
_CHECKSUM = struct.Struct("<I")

Piece = bytes | np.ndarray[Any, Any]


def index_bytes(chunks: int) -> int:
    return 16 * chunks + _CHECKSUM.size


class ShardFile:
    """One shard being filled: the file ``key`` of ``folder``, created here.

    With ``direct``, chunks are written past the page cache (O_DIRECT) where their
    sizes allow, from the first page boundary after the index; the bytes in between
    belong to no chunk.
    """

    def __init__(self, folder: Folder, key: str, chunks: int, *, direct: bool) -> None:
        self.key = key
        self.descriptor = folder.create(key, os.O_RDWR)
        try:
            self.index = np.full((chunks, 2), EMPTY, np.dtype("<u8"))
            self.end = index_bytes(chunks)
            if direct:
                self.end = -(-self.end // MEMORY_ALIGNMENT) * MEMORY_ALIGNMENT
            self._index_written = False
            self.write_index()
            self._chunks: PixelFile | None = PixelFile(folder, key, direct=direct)
        except BaseException:
            os.close(self.descriptor)
            raise
        self.is_direct = self._chunks.is_direct

    def append(self, first_chunk: int, pieces: Sequence[Piece]) -> None:
        """Write ``pieces`` after the last chunk; they are chunks ``first_chunk`` on.

        Their index entries are set only once all of them are written (the index on
        disk follows at ``write_index``).
        """
        assert self._chunks is not None, "the shard is finished"
        buffers = [_as_array(piece) for piece in pieces]
        self._chunks.write_at(self.end, buffers)
        entries = []
        for buffer in buffers:
            entries.append((self.end, buffer.nbytes))
            self.end += buffer.nbytes
        self.index[first_chunk : first_chunk + len(entries)] = entries
        self._index_written = False

    def write_index(self) -> None:
        """Put the index in memory at the start of the file (a no-op when unchanged)."""
        if self._index_written:
            return
        pairs = self.index.tobytes()
        write_fully(self.descriptor, 0, pairs + _CHECKSUM.pack(crc32c.crc32c(pairs)))
        self._index_written = True

    def finish(self) -> None:
        """Write the index and release what writing chunks needed (the file stays open
        for the next fsync)."""
        try:
            self.write_index()
        finally:
            if self._chunks is not None:
                self._chunks.close()
                self._chunks = None

    def sync(self) -> None:
        os.fsync(self.descriptor)

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1


def _as_array(piece: Piece) -> np.ndarray[Any, Any]:
    return np.frombuffer(piece, np.uint8) if isinstance(piece, bytes) else piece


@dataclass(frozen=True)
class ShardIndex:
    """A shard's index as read back; ``intact`` is False when its checksum disagrees
    (a crash cut the last rewrite short: each entry is still either empty or right)."""

    entries: np.ndarray[Any, np.dtype[np.uint64]]
    size: int
    intact: bool

    @classmethod
    def read(cls, descriptor: int, chunks: int) -> ShardIndex:
        size = os.fstat(descriptor).st_size
        raw = os.pread(descriptor, index_bytes(chunks), 0)
        if len(raw) < index_bytes(chunks):
            return cls(np.full((chunks, 2), EMPTY, np.dtype("<u8")), size, False)
        pairs, (checksum,) = raw[:-4], _CHECKSUM.unpack(raw[-4:])
        entries = np.frombuffer(pairs, np.dtype("<u8")).reshape(chunks, 2)
        return cls(entries, size, crc32c.crc32c(pairs) == checksum)

    def stored(self, first: int, count: int) -> bool:
        """True if chunks ``first`` to ``first + count`` are all stored within the file."""
        entries = self.entries[first : first + count]
        if len(entries) < count or (entries == EMPTY).any():
            return False
        return bool((entries[:, 0] + entries[:, 1] <= self.size).all())
