"""Pixel data written at fixed offsets of an open file, past the page cache if possible.

tifffile lays out a contiguous series as one IFD, then the pixels of every page back
to back, then the remaining IFDs at close. The pixels in between are plain bytes at
``data_offset + index * frame_bytes``, so they need not pass through tifffile. Written
with ``O_DIRECT`` they skip the page cache: no gigabytes of dirty pages behind a long
acquisition, and a write rate that does not depend on the page cache's state
(docs/performance.md).

``O_DIRECT`` needs aligned memory, offsets and lengths. Memory is made aligned by
copying it into two staging buffers in turn: a helper thread writes one while the
other fills, so the copy and the disk overlap (neither holds the GIL). Memory that is
aligned already (a shared-memory ring) is written as it is. An unaligned offset or
length, a filesystem without ``O_DIRECT`` (some network and FUSE filesystems) or a
device that needs more alignment (EINVAL) falls back to plain positioned writes.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from ._folder import Folder

log = logging.getLogger(__name__)

DIRECT_ALIGNMENT = 512
"""Offset and length alignment O_DIRECT needs on common block devices (4Kn disks
need 4096; they reject the write with EINVAL and the file falls back)."""
MEMORY_ALIGNMENT = mmap.PAGESIZE
VECTORS_PER_WRITE = 512
"""Buffers per pwritev (the kernel takes at most IOV_MAX = 1024)."""
STAGING_BYTES = 4 << 20
"""Largest single staged write (two such buffers per open file); larger writes measured
no faster here and cost memory."""


class PartialWriteError(OSError):
    """A write failed after ``written`` bytes reached the file."""

    def __init__(self, cause: OSError, written: int) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.written = written


class PixelFile:
    """Positioned writes into one file; ``direct`` asks for O_DIRECT where possible."""

    def __init__(self, folder: Folder, name: str, *, direct: bool = True) -> None:
        """Open the existing file ``name`` in ``folder`` (never through a link)."""
        self.folder = folder
        self.name = name
        self._fd = folder.open(name, os.O_WRONLY)
        self._direct_fd: int | None = None
        self._staged: _StagedWrites | None = None
        self._bypasses_cache = False
        if direct:
            self._open_direct()

    @property
    def is_direct(self) -> bool:
        """True if writes bypass the page cache (stays so after close)."""
        return self._bypasses_cache

    def _open_direct(self) -> None:
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return
        try:
            self._direct_fd = self.folder.open(self.name, os.O_WRONLY | flag)
        except OSError as exc:
            log.info("%s: no O_DIRECT (%s); writing through the page cache", self.name, exc)
            return
        self._staged = _StagedWrites(self._direct_fd)
        self._bypasses_cache = True

    def write_at(self, offset: int, buffers: Sequence[np.ndarray[Any, Any]]) -> None:
        """Write ``buffers`` (C-contiguous arrays) back to back from ``offset``.

        Raises PartialWriteError, telling how many bytes made it, when the write fails.
        """
        total = sum(buffer.nbytes for buffer in buffers)
        if self._direct_fd is not None and _aligned(offset, total):
            try:
                self._write_direct(offset, buffers)
                return
            except PartialWriteError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info(
                    "%s: O_DIRECT refused (%s); writing through the page cache",
                    self.name,
                    exc,
                )
                self._close_direct()
                self._bypasses_cache = False
        done = 0
        for buffer in buffers:
            write_fully(self._fd, offset + done, _bytes_of(buffer), done)
            done += buffer.nbytes

    def _write_direct(self, offset: int, buffers: Sequence[np.ndarray[Any, Any]]) -> None:
        fd, staged = self._direct_fd, self._staged
        assert fd is not None
        assert staged is not None
        if all(_direct_ready(buffer) for buffer in buffers):
            _write_vectors(fd, offset, buffers)
        else:
            staged.write(offset, buffers)

    def extend_to(self, size: int) -> None:
        """Grow the file to ``size`` bytes (a sparse hole reads back as zeros)."""
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)

    def close(self) -> None:
        """Idempotent."""
        self._close_direct()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _close_direct(self) -> None:
        if self._staged is not None:
            self._staged.close()
            self._staged = None
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None


class _StagedWrites:
    """Unaligned buffers written with O_DIRECT through two aligned staging buffers.

    While a helper thread writes one buffer, the caller fills the other. One write at a
    time is in flight, so a failure still says exactly how many bytes made it.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffers = (aligned_buffer(STAGING_BYTES), aligned_buffer(STAGING_BYTES))
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="pixel-writes")

    def write(self, offset: int, buffers: Sequence[np.ndarray[Any, Any]]) -> None:
        """Write ``buffers`` back to back from ``offset``; PartialWriteError on failure."""
        in_flight: Future[None] | None = None
        submitted = filled = turn = 0
        staging = self._buffers[turn]
        try:
            for buffer in buffers:
                source, start = _bytes_of(buffer), 0
                while start < source.nbytes:
                    take = min(source.nbytes - start, STAGING_BYTES - filled)
                    np.copyto(staging[filled : filled + take], source[start : start + take])
                    filled, start = filled + take, start + take
                    if filled < STAGING_BYTES:
                        continue
                    if in_flight is not None:
                        in_flight.result()  # frees the other buffer; raises its failure
                    in_flight = self._helper.submit(
                        write_fully, self._fd, offset + submitted, staging, submitted
                    )
                    submitted, filled, turn = submitted + filled, 0, 1 - turn
                    staging = self._buffers[turn]
            if in_flight is not None:
                in_flight.result()
            if filled:
                write_fully(self._fd, offset + submitted, staging[:filled], submitted)
        finally:
            if in_flight is not None:
                wait((in_flight,))  # never leave a buffer being written behind

    def close(self) -> None:
        self._helper.shutdown(wait=True)


def aligned_buffer(size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """``size`` bytes starting on a memory page boundary."""
    raw = np.empty(size + MEMORY_ALIGNMENT, np.uint8)
    skip = -raw.ctypes.data % MEMORY_ALIGNMENT
    return raw[skip : skip + size]


def _direct_ready(buffer: np.ndarray[Any, Any]) -> bool:
    """Whether O_DIRECT can take ``buffer`` as it is (no staging copy)."""
    return buffer.ctypes.data % MEMORY_ALIGNMENT == 0 and buffer.nbytes % DIRECT_ALIGNMENT == 0


def _write_vectors(fd: int, offset: int, buffers: Sequence[np.ndarray[Any, Any]]) -> None:
    """Gathered writes of aligned buffers, straight from where they are (a shared ring)."""
    done = 0
    for first in range(0, len(buffers), VECTORS_PER_WRITE):
        group = [_bytes_of(buffer) for buffer in buffers[first : first + VECTORS_PER_WRITE]]
        if len(group) == 1:
            write_fully(fd, offset + done, group[0], done)
            done += group[0].nbytes
            continue
        size = sum(part.nbytes for part in group)
        try:
            written = os.pwritev(fd, [part.data for part in group], offset + done)
        except OSError as exc:
            raise PartialWriteError(exc, done) from exc
        if written < size:  # rare (a signal, a full disk): finish byte-exact
            write_fully(
                fd, offset + done + written, np.concatenate(group)[written:], done + written
            )
        done += size


def _aligned(offset: int, length: int) -> bool:
    return offset % DIRECT_ALIGNMENT == 0 and length % DIRECT_ALIGNMENT == 0


def _bytes_of(buffer: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return buffer.reshape(-1).view(np.uint8)


def write_fully(
    fd: int, offset: int, data: bytes | np.ndarray[Any, Any], done_before: int = 0
) -> None:
    """pwrite ``data`` at ``offset`` until every byte is written; a failure raises
    PartialWriteError with the bytes that made it (plus ``done_before``)."""
    view = memoryview(data).cast("B") if isinstance(data, bytes) else _bytes_of(data).data
    done = 0
    while done < view.nbytes:
        try:
            done += os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            raise PartialWriteError(exc, done_before + done) from exc
