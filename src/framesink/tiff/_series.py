"""One contiguous series of equal pages in a BigTIFF, appended frame by frame.

tifffile writes the header, the first page's IFD and, at close, the IFDs of every
other page. The pixels of pages after the first are written here at their offsets
(see :mod:`framesink.tiff._pixels`), and tifffile is told the page count at close. That
count lives in tifffile's private ``_datashape``; if a tifffile release changes it,
pages are reserved through tifffile's public API instead (slower, never wrong).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tifffile

from ..core import FrameLayout
from ..store import DIRECT_ALIGNMENT, Folder, PartialWriteError, PixelFile
from ._ifds import append_page_index
from ._image import photometric_of

log = logging.getLogger(__name__)

DATA_ALIGNMENT = 4096
"""Where the pixels start: a page boundary, so that O_DIRECT can write them."""


class ContiguousSeries:
    """Pages of one layout, appended in order; ``pages`` counts the complete ones."""

    def __init__(
        self,
        folder: Folder,
        name: str,
        layout: FrameLayout,
        *,
        description: str,
        direct_io: bool = True,
    ) -> None:
        """Create the file ``name`` in ``folder`` (it must not exist)."""
        self.folder = folder
        self.name = name
        self.layout = layout
        self.pages = 0
        self._reserved = 0
        self._description = description
        self._direct_io = direct_io
        self._file = folder.create_binary(name)
        self._tiff = tifffile.TiffWriter(tifffile.FileHandle(self._file, name=name), bigtiff=True)
        self._pixels: PixelFile | None = None
        self._data_offset: int | None = None
        self._counts_pages_itself = False

    @property
    def is_direct(self) -> bool:
        """True if pixels bypass the page cache."""
        return self._pixels is not None and self._pixels.is_direct

    # -- appending ---------------------------------------------------------------------
    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None:
        """Append chunks of frames (first axis = frame number), in one write if possible.

        A failed write raises PartialWriteError; ``pages`` then counts the frames
        that did reach the file.
        """
        data = [np.ascontiguousarray(chunk) for chunk in chunks]
        count = sum(len(chunk) for chunk in data)
        if count == 0:
            return
        first = self._reserve(count)
        assert self._pixels is not None
        try:
            self._pixels.write_at(self._offset(first), data)
        except PartialWriteError as exc:
            self.pages = first + exc.written // self.layout.frame_bytes
            raise
        self.pages = first + count

    def append_empty(self, count: int) -> None:
        """Append ``count`` zero frames as a sparse hole."""
        first = self._reserve(count)
        self.pages = first + count
        assert self._pixels is not None
        self._pixels.extend_to(self._offset(self.pages))

    def _reserve(self, count: int) -> int:
        """Make room for ``count`` more pages; return the index of the first."""
        first = self._reserved
        if self._data_offset is None:
            self._start_series()
            count -= 1
        if not self._counts_pages_itself:
            for _ in range(count):
                self._reserve_page_via_tifffile()
        self._reserved += count
        return first

    def _offset(self, index: int) -> int:
        assert self._data_offset is not None
        return self._data_offset + index * self.layout.frame_bytes

    def _start_series(self) -> None:
        """Lay out the first page (pixels still a hole) and decide who counts pages."""
        offset = self._reserve_page_via_tifffile(align=DATA_ALIGNMENT)
        self._counts_pages_itself = self._tifffile_state_is_known(offset)
        if not self._counts_pages_itself:
            log.warning(
                "%s: this tifffile release keeps contiguous pages differently; "
                "reserving every page through tifffile (slower)",
                self.name,
            )
        self._pixels = PixelFile(
            self.folder, self.name, direct=self._direct_io and self._can_write_directly()
        )
        self._data_offset = offset
        self._reserved = 1

    def _can_write_directly(self) -> bool:
        if not self._counts_pages_itself:
            return False
        if self.layout.frame_bytes % DIRECT_ALIGNMENT:
            log.info(
                "%s: frames of %d bytes are not a multiple of %d; writing through the page cache",
                self.name,
                self.layout.frame_bytes,
                DIRECT_ALIGNMENT,
            )
            return False
        return True

    def _tifffile_state_is_known(self, offset: int) -> bool:
        """True if tifffile keeps the series as this module expects (one page, here)."""
        state = (getattr(self._tiff, "_datashape", None), getattr(self._tiff, "_dataoffset", None))
        return state == ((1, *self.layout.frame_shape), offset)

    def _reserve_page_via_tifffile(self, align: int | None = None) -> int:
        """Add one page whose pixels are a hole for now; return its data offset."""
        result = self._tiff.write(
            None,
            shape=self.layout.frame_shape,
            dtype=self.layout.dtype,
            contiguous=True,
            align=align,
            returnoffset=True,
            metadata=None,
            description=self._description,
            photometric=photometric_of(self.layout),
        )
        self._tiff.filehandle.flush()
        if result is None:
            raise RuntimeError("tifffile did not tell where the page's pixels go")
        return int(result[0])

    # -- closing -----------------------------------------------------------------------
    def sync(self) -> None:
        """Force the file to stable storage."""
        os.fsync(self._tiff.filehandle.fileno())

    def close(self) -> None:
        """Write the page index of the complete pages and close; a torn last page is cut off.

        tifffile writes the IFD of page 1 at most; the others are appended in bounded
        memory (:mod:`framesink.tiff._ifds`), so closing does not grow with the frame count.
        """
        streamed = False
        if self._data_offset is not None:
            self._cut_to_complete_pages()
            streamed = self._counts_pages_itself
        self._tiff.close()
        self._file.close()
        if streamed and self.pages > 2:
            self._append_page_index()
        self._close_pixels()

    def _cut_to_complete_pages(self) -> None:
        if self.pages == 0:
            raise OSError("no complete frame to keep")
        if not self._counts_pages_itself:
            if self.pages != self._reserved:
                raise OSError("this tifffile release cannot cut a torn frame off")
            return
        end = self._offset(self.pages)
        handle = self._tiff.filehandle
        handle.flush()
        os.ftruncate(handle.fileno(), end)
        handle.seek(end)
        self._tiff._datashape = (min(self.pages, 2), *self.layout.frame_shape)

    def _append_page_index(self) -> None:
        descriptor = self.folder.open(self.name, os.O_RDWR)
        try:
            append_page_index(descriptor, self.pages, self.layout.frame_bytes)
        finally:
            os.close(descriptor)

    def close_quietly(self) -> None:
        """Release the file after a failure, keeping whatever reached it."""
        for close in (self._tiff.filehandle.close, self._file.close, self._close_pixels):
            try:
                close()
            except (OSError, ValueError):
                continue

    def _close_pixels(self) -> None:
        if self._pixels is not None:
            self._pixels.close()
