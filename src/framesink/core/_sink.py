"""The seam between the daemon and the storage of one acquisition (pure).

The daemon writes every acquisition to a :class:`FrameSink` made by a
:data:`SinkFactory`: prepare, write, skip, finalize (the shape of ome-writers'
backends). framesink's own sinks write the format a start names (see
:mod:`framesink.formats`); tests put a failing or gated sink in its place without
reaching into the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._compression import Compression, compression_of
from ._errors import FramesinkError, RefusalError
from ._layout import FrameLayout
from ._names import ExistsPolicy
from ._record import AcquisitionRecord, FinishReason, FrameCounts

FrameMetadata = Mapping[str, Any] | None


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive frames (first axis = frame number) and their optional metadata."""

    frames: np.ndarray[Any, Any]
    metadata: Sequence[FrameMetadata] | None = None
    release: Callable[[], None] | None = None
    """Called once the frames are written or given up (their memory may then be reused)."""

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class StorageOptions:
    """How a format stores pixels; each format takes the options it knows."""

    direct_io: bool = True
    """Write pixels past the page cache (O_DIRECT) where the format and the frames allow."""
    compression: Compression = Compression.NONE
    compression_level: int | None = None
    """The codec's level (None without compression)."""
    chunk_shape: tuple[int, int] | None = None
    """Rows and columns of a frame that one chunk holds, for formats that chunk frames
    (None: the format's rule from the frame shape and dtype)."""
    shard_frames: int | None = None
    """Frames one shard aims to hold, for formats that group chunks in shards (None:
    the format's rule)."""

    @classmethod
    def create(
        cls,
        *,
        direct_io: bool = True,
        compression: object = Compression.NONE,
        compression_level: object = None,
        chunk_shape: Sequence[int] | None = None,
        shard_frames: int | None = None,
        acquisition: str | None = None,
    ) -> StorageOptions:
        """Options with the compression checked (RefusalError ``bad_compression``) and
        the chunk and shard choices checked (RefusalError ``bad_start``)."""
        codec, level = compression_of(compression, compression_level, acquisition)
        chunk = None if chunk_shape is None else tuple(chunk_shape)
        if chunk is not None and (len(chunk) != 2 or not all(_positive(n) for n in chunk)):
            raise RefusalError(
                "bad_start",
                f"chunk_shape must be two positive integers [rows, columns]; got {chunk_shape!r}",
                acquisition,
            )
        if shard_frames is not None and not _positive(shard_frames):
            raise RefusalError(
                "bad_start",
                f"shard_frames must be a positive integer; got {shard_frames!r}",
                acquisition,
            )
        return cls(
            direct_io=direct_io,
            compression=codec,
            compression_level=level,
            chunk_shape=None if chunk is None else (chunk[0], chunk[1]),
            shard_frames=shard_frames,
        )


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1 << 20


@dataclass(frozen=True)
class SinkSpec:
    """Everything a sink needs to store one acquisition.

    ``output_path`` comes from the wire: the sink confines it to ``data_root``.
    """

    acquisition: str
    data_root: Path
    output_path: str
    name: str
    metadata: dict[str, Any]
    layout: FrameLayout
    format: str
    """A name in the format registry (``ome-tiff``, ...)."""
    options: StorageOptions = StorageOptions()
    on_exists: ExistsPolicy = ExistsPolicy.INCREMENT
    fsync_interval: float | None = 1.0


@dataclass(frozen=True)
class SinkProgress:
    """How far a sink has come; ``path`` is where its pixels are now."""

    path: Path
    started: str
    counts: FrameCounts
    direct_io: bool
    compression: Compression = Compression.NONE


class WriteError(FramesinkError, RuntimeError):
    """Finalizing failed; ``record`` says what was kept."""

    def __init__(self, message: str, record: AcquisitionRecord) -> None:
        super().__init__(message)
        self.record = record


class FrameSink(Protocol):
    """Where one acquisition's frames go, in index order.

    ``prepare`` creates the files (OSError or ValueError refuses the acquisition);
    ``write`` raises OSError when the storage fails, after which ``progress`` tells
    what was kept; ``finalize`` is idempotent and raises WriteError (with the record)
    when the result is not complete on disk.
    """

    def prepare(self) -> None: ...

    def write(self, chunks: Sequence[FrameChunk]) -> None: ...

    def skip(self, count: int) -> None: ...

    def drop(self, count: int) -> None: ...

    def lose_messages(self, count: int) -> None: ...

    def finalize(
        self,
        reason: FinishReason,
        *,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AcquisitionRecord: ...

    def progress(self) -> SinkProgress: ...


SinkFactory = Callable[[SinkSpec], FrameSink]
