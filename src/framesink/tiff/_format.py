"""OME-TIFF as a storage format: how its image is made and how a crash's leftover is read."""

from __future__ import annotations

import logging
import os
from typing import IO, Any

import numpy as np
import tifffile

from ..core import FrameLayout, OutputFiles, StorageOptions
from ..store import Folder, Journal, JournalState, read_exactly
from ._image import PLACEHOLDER_DESCRIPTION, TiffImage
from ._series import ContiguousSeries

log = logging.getLogger(__name__)


class OmeTiffFormat:
    """BigTIFF, one series of uncompressed pages, OME-XML in the first page."""

    name = "ome-tiff"
    suffix = ".ome.tiff"
    record_aliases = ("tiff",)

    def create(
        self,
        folder: Folder,
        files: OutputFiles,
        layout: FrameLayout,
        options: StorageOptions,
        journal: Journal,
    ) -> TiffImage:
        series = ContiguousSeries(
            folder,
            files.partial,
            layout,
            description=PLACEHOLDER_DESCRIPTION,
            direct_io=options.direct_io,
        )
        return TiffImage(folder, files, layout, series)

    def open_interrupted(
        self, folder: Folder, source: str, state: JournalState
    ) -> InterruptedTiff | None:
        header = state.header
        frame_bytes = int(np.prod(header.frame_shape)) * np.dtype(header.dtype).itemsize
        handle = folder.open_binary(source)
        try:
            frames, offset = _frames_on_disk(handle, source, frame_bytes, state.frames)
        except BaseException:
            handle.close()
            raise
        return InterruptedTiff(handle, offset, frame_bytes, frames)


class InterruptedTiff:
    """A partial OME-TIFF: ``frames`` complete, equal frames from ``data_offset`` on."""

    def __init__(self, handle: IO[bytes], data_offset: int, frame_bytes: int, frames: int) -> None:
        self._handle = handle
        self.data_offset = data_offset
        self.frame_bytes = frame_bytes
        self.frames = frames

    def read(self, first: int, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
        return read_exactly(
            self._handle.fileno(), self.data_offset + first * self.frame_bytes, into
        )

    def close(self) -> None:
        self._handle.close()


def _frames_on_disk(
    source: IO[bytes], name: str, frame_bytes: int, journaled: int | None
) -> tuple[int, int]:
    """Complete frames in ``source`` that recovery may keep, and where its pixels start.

    The journal's count decides: bytes after the last journaled frame may be a page
    index (IFDs) written at finalize, not pixels. Frames the journal counts but whose
    bytes never reached the disk (power loss) are cut off by the file's size.
    """
    size = os.fstat(source.fileno()).st_size
    if size == 0:
        return 0, 0
    try:
        with tifffile.TiffFile(tifffile.FileHandle(source, name=name)) as tiff:
            pages = len(tiff.pages)
            first = tiff.pages[0]
            offset = int(first.dataoffsets[0])
            closed = pages > 1 or str(getattr(first, "description", "")).startswith("<?xml")
    except (tifffile.TiffFileError, IndexError, ValueError, OSError):
        return 0, 0
    in_file = max(0, (size - offset) // frame_bytes)
    if journaled is not None:
        return min(journaled, in_file), offset
    # A version 1 journal has no frame count: the file's own page index, else its size.
    log.warning("%s: journal without frame counts; counting frames from the file", name)
    return (pages if closed else in_file), offset
