"""What the rest of framesink uses of the formats: writers, sinks and recovery by format name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core import AcquisitionRecord, MetaData, SinkSpec, StorageOptions
from ..store import (
    Acquisition,
    AcquisitionWriter,
    Folder,
    RecoveryOutcome,
    StoreSink,
)
from ..store import open_acquisition as _open_acquisition
from ..store import recover as _recover
from ..store import (
    recover_each as _recover_each,
)
from ._registry import DEFAULT_FORMAT, FORMATS


class StreamWriter(AcquisitionWriter):
    """Writes one acquisition as frames arrive, in the format named by ``format``.

    Open it on a folder, append frames (``write``, ``write_batch``), record frames that
    never came (``skip``), and ``finalize`` (also on leaving a ``with`` block): the image
    gets its final name and metadata.json is written beside it. Memory stays flat.

    ``compression`` (``zstd``, ``deflate``, or whatever the format holds) at
    ``compression_level`` (the codec's fast default when None) compresses the pixels;
    a bad one raises RefusalError ``bad_compression`` before any file is made.
    ``chunk_shape`` ([rows, columns] of a frame per chunk) and ``shard_frames`` choose
    an OME-Zarr's chunks and shards (other formats ignore them).
    """

    def __init__(
        self,
        folder: str | Path | Folder,
        name: str,
        metadata: MetaData | Mapping[str, Any],
        *,
        dtype: object,
        frame_shape: Sequence[int],
        shape: Sequence[int | None] | None = None,
        acquisition: str | None = None,
        overwrite: bool = False,
        fsync_interval: float | None = 1.0,
        direct_io: bool = True,
        format: str = DEFAULT_FORMAT,
        compression: str = "none",
        compression_level: int | None = None,
        chunk_shape: Sequence[int] | None = None,
        shard_frames: int | None = None,
    ) -> None:
        options = StorageOptions.create(
            direct_io=direct_io,
            compression=compression,
            compression_level=compression_level,
            chunk_shape=chunk_shape,
            shard_frames=shard_frames,
        )
        super().__init__(
            folder,
            name,
            metadata,
            image_format=FORMATS.get(format, options=options),
            dtype=dtype,
            frame_shape=frame_shape,
            shape=shape,
            acquisition=acquisition,
            overwrite=overwrite,
            fsync_interval=fsync_interval,
            options=options,
        )

    @property
    def frames_written(self) -> int:
        return self.ledger.frames_written

    @property
    def frames_missing(self) -> int:
        return self.ledger.frames_missing

    @property
    def missing_ranges(self) -> list[list[int]]:
        return self.ledger.missing_ranges

    @property
    def frames_dropped(self) -> int:
        return self.ledger.frames_dropped

    @property
    def messages_lost(self) -> int:
        return self.ledger.messages_lost

    @property
    def bytes_written(self) -> int:
        """Pixel bytes received and written (zero-filled frames not counted)."""
        return self.ledger.bytes_written


def open_sink(spec: SinkSpec) -> StoreSink:
    """The daemon's sink for ``spec``, in the format it names (RefusalError
    ``bad_format``, ``bad_compression``)."""
    return StoreSink(spec, FORMATS.get(spec.format, spec.acquisition, spec.options, spec.layout))


def recover_each(path: str | Path, *, retry_failed: bool = True) -> Iterator[RecoveryOutcome]:
    """Recover every interrupted acquisition at or under ``path``, one folder at a time.

    Whatever goes wrong in one folder is reported for it and written to a marker file in
    it; the other folders go on. With ``retry_failed=False`` a folder with such a marker
    is reported again, not retried.
    """
    return _recover_each(path, FORMATS.__getitem__, retry_failed=retry_failed)


def open_acquisition(path: str | Path) -> Acquisition:
    """Read back the acquisition at ``path`` (its folder or its image), finished or still
    being written, in any format.

    The result has ``array`` (lazy: indexing reads only the frames it needs), ``axes``,
    ``metadata``, ``record`` (None while it runs) and ``missing_ranges``; a running
    acquisition shows the frames written when it was opened (open it again for more).
    NotAnAcquisitionError names a path that is not an acquisition.
    """
    return _open_acquisition(path, FORMATS.__getitem__)


def recover(path: str | Path) -> list[AcquisitionRecord]:
    """Recover every interrupted acquisition at or under ``path``; return their records.

    One that cannot be recovered is logged, marked and skipped; RecoveryError is raised
    at the end if any failed.
    """
    return _recover(path, FORMATS.__getitem__)
