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

from ..store import write_fully

EMPTY = np.uint64(2**64 - 1)
"""An index entry's offset and nbytes for a chunk that is not stored."""
_CHECKSUM = struct.Struct("<I")

Piece = bytes | np.ndarray[Any, Any]


def index_bytes(chunks: int) -> int:
    return 16 * chunks + _CHECKSUM.size


class ShardFile:
    """One shard being filled; ``descriptor`` is its file, open for writing."""

    def __init__(self, descriptor: int, chunks: int, key: str) -> None:
        self.descriptor = descriptor
        self.key = key
        self.index = np.full((chunks, 2), EMPTY, np.dtype("<u8"))
        self.end = index_bytes(chunks)
        self._index_written = False
        self.write_index()

    def append(self, first_chunk: int, pieces: Sequence[Piece]) -> None:
        """Write ``pieces`` after the last chunk; they are chunks ``first_chunk`` on.

        Their index entries are set only once all of them are written (the index on
        disk follows at ``write_index``).
        """
        offset = self.end
        entries = []
        for piece in pieces:
            size = len(piece) if isinstance(piece, bytes) else piece.nbytes
            write_fully(self.descriptor, offset, piece)
            entries.append((offset, size))
            offset += size
        self.index[first_chunk : first_chunk + len(entries)] = entries
        self.end = offset
        self._index_written = False

    def write_index(self) -> None:
        """Put the index in memory at the start of the file (a no-op when unchanged)."""
        if self._index_written:
            return
        pairs = self.index.tobytes()
        write_fully(self.descriptor, 0, pairs + _CHECKSUM.pack(crc32c.crc32c(pairs)))
        self._index_written = True

    def sync(self) -> None:
        os.fsync(self.descriptor)

    def close(self) -> None:
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1


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
