"""Streaming OME-TIFF writer: open, append chunks, record gaps, finalize.

Frames are appended as contiguous BigTIFF pages under a temporary name; the OME-XML,
the final name and metadata.json come at finalize. A journal written at open makes a
file left behind by a crash recoverable (see :func:`framesink.recover`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import tifffile

from ..core import (
    RESERVED_METADATA_KEY,
    AcquisitionFiles,
    AcquisitionRecord,
    FinishReason,
    FrameChunk,
    FrameLayout,
    FrameMetadata,
    MetaData,
    OutputFiles,
    WriteError,
    __version__,
    build_ome_xml,
    check_output_name,
    metadata_dict,
    metadata_document,
    utc_now,
)
from ._files import describe_os_error, write_json_atomically
from ._folder import Folder
from ._journal import Journal, JournalHeader
from ._paths import folder_is_taken
from ._series import ContiguousSeries
from ._sidecar import Sidecar, read_sidecar

log = logging.getLogger(__name__)

PLACEHOLDER_DESCRIPTION = (
    "framesink: acquisition in progress; if this file was left behind, "
    "run `framesink recover` on its folder"
)


class StreamWriter:
    """Writes one acquisition to ``<folder>/<name>.ome.tiff`` as frames arrive.

    Memory stays flat: frames go straight to disk, per-frame metadata to a sidecar.
    ``finalize`` is idempotent and always leaves a readable file (or, if even that
    fails, a partial file plus journal that ``framesink recover`` can repair).
    """

    def __init__(
        self,
        folder: str | Path | Folder,  # a Folder is the writer's to close
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
    ) -> None:
        self.metadata = metadata_dict(metadata)
        self.layout = FrameLayout.create(
            self.metadata["axes"], dtype, list(frame_shape), None if shape is None else list(shape)
        )
        self.name = check_output_name(name)
        self.directory = folder if isinstance(folder, Folder) else _open_folder(folder)
        self.folder = self.directory.path
        self.acquisition = acquisition or self.name
        self.fsync_interval = fsync_interval
        self.files = OutputFiles(self.name)
        self.started = utc_now()
        self.frames_written = 0
        self.frames_dropped = 0
        self.messages_lost = 0
        self.missing_ranges: list[list[int]] = []
        self._failure: OSError | None = None
        self._record: AcquisitionRecord | None = None
        try:
            self._open_files(overwrite, direct_io)
        except BaseException:
            if not isinstance(folder, Folder):
                self.directory.close()
            raise
        self._sync_lock = threading.Lock()
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync_interval:
            self._syncer = threading.Thread(
                target=self._sync_periodically, name=f"fsync-{self.name}", daemon=True
            )
            self._syncer.start()

    # -- paths and state -------------------------------------------------------------
    @property
    def partial_path(self) -> Path:
        return self.folder / self.files.partial

    @property
    def tiff_path(self) -> Path:
        return self.folder / self.files.tiff

    @property
    def frames_in_file(self) -> int:
        """Frames (written or zero-filled) the file holds."""
        return self._series.pages

    @property
    def direct_io(self) -> bool:
        """True if pixels were written past the page cache (O_DIRECT)."""
        return self._series.is_direct

    @property
    def bytes_written(self) -> int:
        """Pixel bytes received and written (zero-filled frames not counted)."""
        return self.frames_written * self.layout.frame_bytes

    @property
    def frames_missing(self) -> int:
        return sum(last - first + 1 for first, last in self._missing_in_file())

    @property
    def is_full(self) -> bool:
        capacity = self.layout.capacity
        return capacity is not None and self.frames_in_file >= capacity

    @property
    def finalized(self) -> bool:
        return self._record is not None

    @property
    def record(self) -> AcquisitionRecord | None:
        """The record of the finalized acquisition, or None while it is open."""
        return self._record

    def _open_files(self, overwrite: bool, direct_io: bool) -> None:
        """The journal first (recovery needs it), then the TIFF; none is left on failure."""
        self._prepare_folder(overwrite)
        self._sidecar = Sidecar(self.directory, self.files.sidecar)
        self._journal = Journal(self.directory, self._journal_header())
        try:
            self._series = ContiguousSeries(
                self.directory,
                self.files.partial,
                self.layout,
                description=PLACEHOLDER_DESCRIPTION,
                direct_io=direct_io,
            )
        except BaseException:
            self._journal.remove()
            self.directory.unlink(self.files.partial)
            raise

    def _prepare_folder(self, overwrite: bool) -> None:
        if folder_is_taken(self.directory, self.files) and not overwrite:
            raise FileExistsError(f"{self.folder} already holds files of acquisition {self.name!r}")
        # A sidecar alone is a leftover (its acquisition's other files are gone).
        for name in self.files.all if overwrite else (self.files.sidecar,):
            self.directory.unlink(name)

    def _journal_header(self) -> JournalHeader:
        return JournalHeader(
            acquisition=self.acquisition,
            name=self.name,
            tiff=self.files.tiff,
            partial=self.files.partial,
            sidecar=self.files.sidecar,
            axes=self.layout.axes,
            dtype=self.layout.dtype.name,
            frame_shape=list(self.layout.frame_shape),
            shape=list(self.layout.leading_shape),
            metadata=self.metadata,
            started=self.started,
            version=__version__,
        )

    # -- writing -----------------------------------------------------------------------
    def write(
        self, frames: np.ndarray[Any, Any], frame_metadata: Sequence[FrameMetadata] | None = None
    ) -> None:
        """Append one frame or a chunk of frames (first axis = frame number)."""
        self.write_batch([FrameChunk(np.asarray(frames), frame_metadata)])

    def write_batch(self, chunks: Sequence[FrameChunk]) -> None:
        """Append several chunks, each with its optional per-frame metadata.

        They reach the file in as few large writes as possible: the daemon hands over
        whatever is queued, so small messages still make large writes.
        """
        frames = [self._as_frames(chunk.frames) for chunk in chunks]
        metadata: list[FrameMetadata] = []
        for stack, chunk in zip(frames, chunks, strict=True):
            if chunk.metadata is not None and len(chunk.metadata) != len(stack):
                raise ValueError(
                    f"got {len(chunk.metadata)} frame metadata for {len(stack)} frames"
                )
            metadata.extend([None] * len(stack) if chunk.metadata is None else chunk.metadata)
        self._check_room(len(metadata))
        self._guard(self._append, frames, metadata)

    def skip(self, count: int) -> None:
        """Record ``count`` frames as missing; they are zero-filled in the file."""
        if count < 1:
            raise ValueError(f"skip count must be >= 1; got {count}")
        self._check_room(count)
        self._guard(self._zero_fill, count)

    def note_dropped(self, count: int) -> None:
        """Count frames that arrived too late or twice and were not written."""
        self._ensure_open()
        self.frames_dropped += count
        self._journal.append({"dropped": count})

    def note_lost_messages(self, count: int) -> None:
        """Count messages that never arrived (gaps in ``seq``): the acquisition is incomplete."""
        self._ensure_open()
        self.messages_lost += count
        self._journal.append({"lost_messages": count})

    def _as_frames(self, frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self._ensure_open()
        chunk = np.asarray(frames)
        if chunk.shape == self.layout.frame_shape:
            chunk = chunk[np.newaxis]
        if (
            chunk.ndim != len(self.layout.frame_shape) + 1
            or chunk.shape[1:] != self.layout.frame_shape
        ):
            raise ValueError(
                f"frames must have shape {self.layout.frame_shape} or "
                f"(n, *{self.layout.frame_shape}) for axes {self.layout.axes!r}; got {chunk.shape}"
            )
        if chunk.dtype != self.layout.dtype:
            raise TypeError(f"frames must be {self.layout.dtype.name}; got {chunk.dtype.name}")
        return chunk

    def _check_room(self, count: int) -> None:
        capacity = self.layout.capacity
        if capacity is not None and self.frames_in_file + count > capacity:
            raise ValueError(
                f"{count} more frames exceed the shape {list(self.layout.leading_shape)} "
                f"({self.frames_in_file} of {capacity} written)"
            )

    def _ensure_open(self) -> None:
        if self._record is not None:
            raise RuntimeError(f"acquisition {self.acquisition!r} is already finalized")
        if self._failure is not None:
            raise RuntimeError(f"acquisition {self.acquisition!r} failed: {self._failure}")

    def _guard(self, operation: Any, *args: Any) -> None:
        try:
            operation(*args)
        except OSError as exc:
            self._failure = exc
            message = (
                f"writing {self.files.partial} failed after {self.frames_in_file} frames: "
                f"{describe_os_error(exc)}"
            )
            raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc

    def _append(
        self, chunks: Sequence[np.ndarray[Any, Any]], frame_metadata: Sequence[FrameMetadata]
    ) -> None:
        """Write the pixels, then the sidecar lines; only then do the frames count as written."""
        first = self.frames_in_file
        try:
            self._series.append(chunks)
        finally:
            stored = self.frames_in_file - first
            self._sidecar.append(
                (first + offset, meta)
                for offset, meta in enumerate(frame_metadata[:stored])
                if meta
            )
            self._journal.append({"frames": self.frames_in_file})
            self.frames_written += stored

    def _zero_fill(self, count: int) -> None:
        first = self.frames_in_file
        self.missing_ranges.append([first, first + count - 1])
        self._journal.append({"missing": [first, first + count - 1]})
        self._series.append_empty(count)
        self._journal.append({"frames": self.frames_in_file})

    def sync(self) -> None:
        """Force everything handed to the OS so far to stable storage."""
        with self._sync_lock:
            if self._closing.is_set():
                return
            self._series.sync()
            self._sidecar.sync()
            self._journal.sync()

    def _sync_periodically(self) -> None:
        """fsync every ``fsync_interval`` seconds beside the writes, not between them."""
        assert self.fsync_interval
        while not self._closing.wait(self.fsync_interval):
            try:
                self.sync()
            except (OSError, ValueError) as exc:
                log.warning("acquisition %s: periodic fsync failed: %s", self.acquisition, exc)

    def _stop_syncing(self) -> None:
        with self._sync_lock:
            self._closing.set()
        if self._syncer is not None:
            self._syncer.join()

    # -- finalizing --------------------------------------------------------------------
    def finalize(
        self,
        reason: FinishReason | str = FinishReason.STOP,
        *,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AcquisitionRecord:
        """Close the file, embed OME-XML, rename it and write metadata.json.

        Idempotent: later calls return the first call's record. Raises WriteError
        (with the record) when the file could not be completed.
        """
        if self._record is not None:
            return self._record
        self._stop_syncing()
        reason = FinishReason(reason)
        if metadata:
            self.metadata.update({k: v for k, v in metadata.items() if k != RESERVED_METADATA_KEY})
            self._journal.append({"stop_metadata": dict(metadata)})
        errors = [error] if error else []
        if self._failure is not None and not error:
            errors.append(f"write failed: {describe_os_error(self._failure)}")
        try:
            tiff_name = self._finish_tiff(errors)
            if errors:
                reason = FinishReason.ERROR
            self._record = self._make_record(reason, tiff_name, "; ".join(errors) or None)
            metadata_written = self._write_metadata(errors)
        finally:
            self.directory.close()
        if tiff_name != self.files.tiff or not metadata_written:
            raise WriteError(self._record.error or "finalize failed", self._record)
        return self._record

    def _finish_tiff(self, errors: list[str]) -> str:
        """Close, describe and rename the TIFF; return the name it ends up under.

        Each step degrades gracefully: a file that cannot be closed stays under its
        temporary name for ``framesink recover``; one whose OME-XML cannot be embedded
        is still a readable TIFF.
        """
        try:
            self._close_tiff()
        except (OSError, ValueError) as exc:
            errors.append(
                f"could not close {self.files.partial}: {exc}; "
                "`framesink recover` rebuilds it from the journal once the cause is fixed"
            )
            self._close_quietly()
            return self.files.partial
        try:
            self._embed_ome_xml()
        except (OSError, ValueError) as exc:
            errors.append(f"could not embed the OME-XML: {exc}; the pixels are intact")
        try:
            self._sync_file(self.files.partial)
            self.directory.rename(self.files.partial, self.files.tiff)
            self.directory.sync()
        except OSError as exc:
            errors.append(f"could not rename {self.files.partial}: {exc}")
            return self.files.partial
        return self.files.tiff

    def _close_tiff(self) -> None:
        if self._failure is None:
            try:
                self._pad_to_whole_step()
            except OSError as exc:
                self._failure = exc
        self._series.close()
        self._sidecar.close()

    def _pad_to_whole_step(self) -> None:
        padding = self.layout.padded_count(self.frames_in_file) - self.frames_in_file
        if padding:
            self._zero_fill(padding)

    def _embed_ome_xml(self) -> None:
        frames = self.frames_in_file
        xml = build_ome_xml(
            self.layout,
            frames,
            {k: v for k, v in self.metadata.items() if k != "notes"},
            self.name,
            read_sidecar(self.directory, self.files.sidecar),
        )
        with self.directory.open_binary(self.files.partial, "r+b") as handle:
            tifffile.tiffcomment(
                tifffile.FileHandle(handle, name=self.files.partial), xml.encode("utf-8")
            )

    def _sync_file(self, name: str) -> None:
        descriptor = self.directory.open(name)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _close_quietly(self) -> None:
        for close in (self._series.close_quietly, self._sidecar.close):
            try:
                close()
            except (OSError, ValueError):
                continue

    def _make_record(
        self, reason: FinishReason, tiff_name: str, error: str | None
    ) -> AcquisitionRecord:
        sidecar = self.files.sidecar if self._sidecar.exists else None
        return AcquisitionRecord(
            acquisition=self.acquisition,
            files=AcquisitionFiles(tiff=tiff_name, sidecar=sidecar),
            dtype=self.layout.dtype.name,
            axes=self.layout.axes,
            shape=list(self.layout.file_shape(self.frames_in_file)),
            declared_shape=list(self.layout.leading_shape),
            frames_written=self.frames_written,
            frames_missing=self.frames_missing,
            missing_ranges=self._missing_in_file(),
            frames_dropped=self.frames_dropped,
            messages_lost=self.messages_lost,
            bytes_written=self.bytes_written,
            started=self.started,
            stopped=utc_now(),
            complete=(
                reason is FinishReason.STOP
                and error is None
                and not self.missing_ranges
                and not self.messages_lost
            ),
            reason=reason,
            error=error,
            version=__version__,
        )

    def _missing_in_file(self) -> list[list[int]]:
        """Missing ranges clipped to the frames the file holds (a fill may have failed)."""
        end = self.frames_in_file - 1
        return [[first, min(last, end)] for first, last in self.missing_ranges if first <= end]

    def _write_metadata(self, errors: list[str]) -> bool:
        assert self._record is not None
        try:
            write_json_atomically(
                self.directory,
                self.files.metadata,
                metadata_document(self.metadata, self._record),
            )
        except (OSError, ValueError) as exc:
            errors.append(f"could not write {self.files.metadata}: {exc}")
            self._record = self._record.model_copy(
                update={"error": "; ".join(errors), "reason": FinishReason.ERROR, "complete": False}
            )
            self._journal.close()
            return False
        if self._record.files.tiff == self.files.tiff:
            self._journal.remove()
        else:
            self._journal.append({"error": self._record.error})
            self._journal.close()
        return True

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finalize(FinishReason.STOP)
        elif not self.finalized:
            self.finalize(FinishReason.ERROR, error=f"{type(exc).__name__}: {exc}")


def _open_folder(path: str | Path) -> Folder:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output path {folder} exists and is not a directory")
    return Folder.at(folder)
