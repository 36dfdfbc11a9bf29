"""OME-TIFF as a storage format: how its image is made and how a crash's leftover is read."""

from __future__ import annotations

import logging
import os
import struct
from typing import IO, Any

import numpy as np
import tifffile

from ..core import Compression, FrameLayout, OutputFiles, StorageOptions
from ..store import Folder, Journal, JournalState, read_exactly
from ._compressed import TIFF_COMPRESSION, CompressedSeries
from ._image import PLACEHOLDER_DESCRIPTION, PageSeries, TiffImage
from ._series import ContiguousSeries

log = logging.getLogger(__name__)


class OmeTiffFormat:
    """BigTIFF, one series of pages (uncompressed, zstd or deflate), OME-XML in the first."""

    name = "ome-tiff"
    suffix = ".ome.tiff"
    record_aliases = ("tiff",)
    compressions = frozenset({Compression.NONE, *TIFF_COMPRESSION})

    def check_layout(self, layout: FrameLayout, acquisition: str | None = None) -> None:
        """Every layout framesink accepts is an OME-TIFF."""

    def create(
        self,
        folder: Folder,
        files: OutputFiles,
        layout: FrameLayout,
        options: StorageOptions,
        journal: Journal,
    ) -> TiffImage:
        series: PageSeries
        if options.compression is Compression.NONE:
            series = ContiguousSeries(
                folder,
                files.partial,
                layout,
                description=PLACEHOLDER_DESCRIPTION,
                direct_io=options.direct_io,
            )
        else:
            series = CompressedSeries(
                folder,
                files.partial,
                layout,
                description=PLACEHOLDER_DESCRIPTION,
                compression=options.compression,
                level=options.compression_level,
            )
        return TiffImage(folder, files, layout, series)

    def open_interrupted(
        self, folder: Folder, source: str, state: JournalState
    ) -> InterruptedTiff | InterruptedCompressedTiff | None:
        header = state.header
        frame_bytes = int(np.prod(header.frame_shape)) * np.dtype(header.dtype).itemsize
        if header.options.get("compression", Compression.NONE) != Compression.NONE:
            return InterruptedCompressedTiff.open(folder, source, state, frame_bytes)
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


class InterruptedCompressedTiff:
    """A partial compressed OME-TIFF: its first ``frames`` pages, read through tifffile.

    tifffile wrote each page's IFD with the page, so the chain of IFDs is the page
    index. Only pages the journal counts are read: one after them may be torn.
    """

    def __init__(
        self, handle: IO[bytes], tiff: tifffile.TiffFile, frame_bytes: int, frames: int
    ) -> None:
        self._handle = handle
        self._tiff = tiff
        self._name = str(handle.name)
        self.frame_bytes = frame_bytes
        self.frames = frames

    @classmethod
    def open(
        cls, folder: Folder, source: str, state: JournalState, frame_bytes: int
    ) -> InterruptedCompressedTiff | None:
        handle = folder.open_binary(source)
        try:
            tiff = tifffile.TiffFile(tifffile.FileHandle(handle, name=source))
        except (tifffile.TiffFileError, ValueError, OSError, struct.error):
            handle.close()
            return None
        tiff.pages.cache = False
        return cls(handle, tiff, frame_bytes, _whole_pages(tiff, state.frames or 0, state.synced))

    def read(self, first: int, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
        frames = into.reshape(-1, self.frame_bytes)
        if first + len(frames) > self.frames:
            return False
        for offset, frame in enumerate(frames):
            frame[:] = self._decoded(first + offset).view(np.uint8).reshape(-1)
        return True

    def _decoded(self, index: int) -> np.ndarray[Any, Any]:
        page = self._tiff.pages[index]
        try:
            return np.asarray(page.asarray())
        except Exception as exc:  # noqa: BLE001 - a page a power loss left unwritten
            log.warning("%s: page %d cannot be decoded (%s); read as zeros", self._name, index, exc)
            return np.zeros(page.shape, page.dtype)

    def close(self) -> None:
        self._tiff.close()
        self._handle.close()


def _whole_pages(tiff: tifffile.TiffFile, journaled: int, synced: int) -> int:
    """Pages (at most ``journaled``) that read back whole.

    Pages up to the last fsync (``synced``) are on stable storage; of the later ones (at
    most ``fsync_interval`` of frames) each is decoded as well: after a power cut their
    blocks may be zeros, and such a page is a frame that never reached the disk (counted
    missing), not a frame of zeros.
    """
    pages = 0
    while pages < journaled:
        try:
            page = tiff.pages[pages]
            if pages >= synced:
                page.asarray()
        except (IndexError, tifffile.TiffFileError, ValueError, OSError, struct.error):
            break
        except Exception as exc:  # noqa: BLE001 - whatever the codec raises on torn data
            log.warning(
                "%s: page %d does not decode (%s); kept up to it", tiff.filename, pages, exc
            )
            break
        pages += 1
    return pages


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
