"""A series of compressed pages in a BigTIFF, appended frame by frame.

Each page is cut into strips of about 256 KB (tifffile's own choice for compressed
pages: a reader decodes one plane, or a few rows of it, without the rest). The strips
are compressed by the shared codec pool, many at once, and handed to tifffile in frame
order; tifffile writes each page as its IFD followed by its strips, so the page index
grows with the file and needs nothing at close.

A page is counted once tifffile has written all of it and moved on; the journal's count
of frames follows the count here, so recovery never takes a half-written page for a
frame. A failed write leaves the pages before it: at close the file is cut back to
them and the last one's link to the torn page is cleared.
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from ..core import Compression, FrameLayout
from ..store import Folder, codec_pool, codec_workers, encoder, settle
from ._image import photometric_of

STRIP_BYTES = 256 * 1024
"""Uncompressed bytes a strip holds at most (one row at least)."""
TIFF_COMPRESSION = {Compression.ZSTD: 50000, Compression.DEFLATE: 8}
"""TIFF's codes: 50000 zstd (Bio-Formats 6.11+), 8 Adobe deflate (every reader)."""
HORIZONTAL_DIFFERENCING = 2
NO_PREDICTOR = 1
_IFD_ENTRY_BYTES = 20

_Pending = collections.deque[list[Future[list[bytes]]]]
"""Pages handed to the pool, oldest first, each as its tasks' futures."""


class CompressedSeries:
    """Compressed pages of one layout, appended in order; ``pages`` counts complete ones."""

    def __init__(
        self,
        folder: Folder,
        name: str,
        layout: FrameLayout,
        *,
        description: str,
        compression: Compression,
        level: int | None,
    ) -> None:
        """Create the file ``name`` in ``folder`` (it must not exist)."""
        self.folder = folder
        self.name = name
        self.layout = layout
        self.pages = 0
        self._description = description
        self._compression = compression
        self._encode = encoder(compression, level)
        self._predictor = predictor_of(layout.dtype)
        self._rows = rows_per_strip(layout)
        self._tasks = codec_workers()
        self._in_flight = max(2, self._tasks)
        """Pages handed to the pool at most: the next page compresses while one is written."""
        self._file = folder.create_binary(name)
        self._tiff = tifffile.TiffWriter(tifffile.FileHandle(self._file, name=name), bigtiff=True)
        self._end = self._tiff.filehandle.tell()
        """Where the last complete page ends (the file is cut back here after a failure)."""
        self._last_ifd: int | None = None
        self._zero_strips: list[bytes] | None = None

    is_direct = False
    """Pages go through the page cache: at the codec's pace the disk is not the limit."""

    # -- appending ---------------------------------------------------------------------
    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None:
        """Compress and append frames (first axis = frame number) in order.

        The frames are read by the pool's threads; none is still read when this returns
        (so ring slots may be released). A failed write raises OSError with ``pages``
        counting the pages that are whole in the file.
        """
        frames = (frame for chunk in chunks for frame in chunk)
        pending: _Pending = collections.deque()
        try:
            while self._submit(frames, pending):
                self._write_page(strip for part in pending[0] for strip in part.result())
                pending.popleft()
        finally:
            settle(future for page in pending for future in page)
            pending.clear()

    def _submit(
        self,
        frames: Iterator[np.ndarray[Any, Any]],
        pending: _Pending,
    ) -> bool:
        """Give the pool frames until enough pages are in flight; False when none is left.

        A page goes to the pool as one task per core (each compressing a run of its
        strips): every core works on a large frame, without a task per strip.
        """
        pool = codec_pool()
        while len(pending) < self._in_flight:
            frame = next(frames, None)
            if frame is None:
                break
            strips = self._strips_of(frame)
            run = -(-len(strips) // self._tasks)
            parts = [strips[start : start + run] for start in range(0, len(strips), run)]
            pending.append([pool.submit(self._encode_strips, part) for part in parts])
        return bool(pending)

    def append_empty(self, count: int) -> None:
        """Append ``count`` zero frames (a zero page compresses to a few bytes a strip)."""
        if self._zero_strips is None:
            zeros = np.zeros(self.layout.frame_shape, self.layout.dtype)
            self._zero_strips = [self._encode_strip(part) for part in self._strips_of(zeros)]
        for _ in range(count):
            self._write_page(iter(self._zero_strips))

    def _strips_of(self, frame: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        return [frame[row : row + self._rows] for row in range(0, len(frame), self._rows)]

    def _encode_strips(self, strips: list[np.ndarray[Any, Any]]) -> list[bytes]:
        return [self._encode_strip(strip) for strip in strips]

    def _encode_strip(self, strip: np.ndarray[Any, Any]) -> bytes:
        if self._predictor == HORIZONTAL_DIFFERENCING:
            # per sample along a row (each channel apart for RGB), wrapping in its own type
            strip = imagecodecs.delta_encode(strip, axis=-2 if strip.ndim == 3 else -1)
        return self._encode(np.ascontiguousarray(strip))

    def _write_page(self, strips: Iterator[bytes]) -> None:
        handle = self._tiff.filehandle
        start = handle.tell()
        self._tiff.write(
            strips,
            shape=self.layout.frame_shape,
            dtype=self.layout.dtype,
            compression=TIFF_COMPRESSION[self._compression],
            predictor=self._predictor,
            rowsperstrip=self._rows,
            photometric=photometric_of(self.layout),
            description=self._description if self.pages == 0 else None,
            metadata=None,
        )
        handle.flush()
        self._last_ifd = start + start % 2
        self._end = handle.tell()
        self.pages += 1

    # -- closing -----------------------------------------------------------------------
    def sync(self) -> None:
        """Force the file to stable storage."""
        os.fsync(self._tiff.filehandle.fileno())

    def close(self) -> None:
        """Close; after a failed write, the torn page is cut off first."""
        if self.pages == 0:
            self.close_quietly()
            raise OSError("no complete frame to keep")
        handle = self._tiff.filehandle
        handle.flush()
        if os.fstat(handle.fileno()).st_size != self._end:
            self._cut_to_complete_pages()
        self._tiff.close()
        self._file.close()

    def _cut_to_complete_pages(self) -> None:
        handle = self._tiff.filehandle
        descriptor = handle.fileno()
        os.ftruncate(descriptor, self._end)
        if self._last_ifd is not None:
            (entries,) = struct.unpack("<Q", os.pread(descriptor, 8, self._last_ifd))
            link = self._last_ifd + 8 + entries * _IFD_ENTRY_BYTES
            os.pwrite(descriptor, bytes(8), link)
        handle.seek(self._end)

    def close_quietly(self) -> None:
        """Release the file after a failure, keeping whatever reached it."""
        for close in (self._tiff.filehandle.close, self._file.close):
            try:
                close()
            except (OSError, ValueError):
                continue


def predictor_of(dtype: np.dtype[Any]) -> int:
    """Horizontal differencing for integers; none for floats (readers such as
    Bio-Formats refuse the floating-point predictor 3)."""
    return HORIZONTAL_DIFFERENCING if dtype.kind in "iu" else NO_PREDICTOR


def rows_per_strip(layout: FrameLayout) -> int:
    row_bytes = layout.frame_bytes // layout.frame_shape[0]
    return max(1, min(layout.frame_shape[0], STRIP_BYTES // row_bytes))
