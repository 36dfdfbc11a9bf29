"""The streaming writer of one acquisition, whatever its format: open, append, finalize.

Frames go to the format's :class:`~framesink.store.Image` under a temporary name as
they arrive; per-frame metadata goes to the sidecar, events to the journal (which
makes an interrupted acquisition recoverable, see :func:`framesink.recover`), counts
to the :class:`~framesink.core.Ledger`. At finalize the image is completed and
described, gets its final name, and metadata.json is written beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from ..core import (
    RESERVED_METADATA_KEY,
    AcquisitionFiles,
    AcquisitionRecord,
    FinishReason,
    FrameChunk,
    FrameLayout,
    FrameMetadata,
    Ledger,
    MetaData,
    OutputFiles,
    StorageOptions,
    WriteError,
    __version__,
    check_output_name,
    metadata_dict,
    metadata_document,
)
from ._files import describe_os_error, write_json_atomically
from ._folder import Folder
from ._format import Image, ImageFormat
from ._journal import Journal, JournalHeader
from ._paths import folder_is_taken
from ._sidecar import Sidecar, read_sidecar

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = StorageOptions()


class AcquisitionWriter:
    """Writes one acquisition to ``<folder>/<name><suffix>`` as frames arrive.

    Memory stays flat: frames go straight to disk, per-frame metadata to a sidecar.
    ``finalize`` is idempotent and always leaves a readable image (or, if even that
    fails, a partial image plus journal that ``framesink recover`` can repair).
    """

    def __init__(
        self,
        folder: str | Path | Folder,  # a Folder is the writer's to close
        name: str,
        metadata: MetaData | Mapping[str, Any],
        *,
        image_format: ImageFormat,
        dtype: object,
        frame_shape: Sequence[int],
        shape: Sequence[int | None] | None = None,
        acquisition: str | None = None,
        overwrite: bool = False,
        fsync_interval: float | None = 1.0,
        options: StorageOptions = DEFAULT_OPTIONS,
        started: str | None = None,
    ) -> None:
        self.metadata = metadata_dict(metadata)
        self.layout = FrameLayout.create(
            self.metadata["axes"], dtype, list(frame_shape), None if shape is None else list(shape)
        )
        self.name = check_output_name(name)
        self.format = image_format
        self.options = options
        self.folder = folder if isinstance(folder, Folder) else _open_folder(folder)
        self.acquisition = acquisition or self.name
        self.ledger = Ledger(self.acquisition, self.layout, started)
        self.fsync_interval = fsync_interval
        self.files = OutputFiles(self.name, image_format.suffix)
        self._failure: OSError | None = None
        self._record: AcquisitionRecord | None = None
        try:
            self._open_files(overwrite)
        except BaseException:
            if not isinstance(folder, Folder):
                self.folder.close()
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
    def path(self) -> Path:
        """The acquisition's folder."""
        return self.folder.path

    @property
    def partial_path(self) -> Path:
        return self.path / self.files.partial

    @property
    def image_path(self) -> Path:
        """Where the finished image goes."""
        return self.path / self.files.image

    @property
    def started(self) -> str:
        return self.ledger.started

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

    @property
    def frames_in_file(self) -> int:
        """Frames (written or zero-filled) the image holds."""
        return self._image.frames

    @property
    def direct_io(self) -> bool:
        """True if pixels were written past the page cache (O_DIRECT)."""
        return self._image.is_direct

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

    def _open_files(self, overwrite: bool) -> None:
        """The journal first (recovery needs it), then the image; none is left on failure."""
        self._prepare_folder(overwrite)
        self._sidecar = Sidecar(self.folder, self.files.sidecar)
        self._journal = Journal(self.folder, self._journal_header())
        try:
            self._image: Image = self.format.create(
                self.folder, self.files, self.layout, self.options, self._journal
            )
        except BaseException:
            self._journal.remove()
            self.folder.unlink(self.files.partial)
            raise

    def _prepare_folder(self, overwrite: bool) -> None:
        if folder_is_taken(self.folder, self.files) and not overwrite:
            raise FileExistsError(f"{self.path} already holds files of acquisition {self.name!r}")
        # A sidecar alone is a leftover (its acquisition's other files are gone).
        for name in self.files.all if overwrite else (self.files.sidecar,):
            self.folder.unlink(name)

    def _journal_header(self) -> JournalHeader:
        return JournalHeader(
            acquisition=self.acquisition,
            format=self.format.name,
            options=dataclasses.asdict(self.options),
            name=self.name,
            image=self.files.image,
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
        self.ledger.note_dropped(count)
        self._journal.append({"dropped": count})

    def note_lost_messages(self, count: int) -> None:
        """Count messages that never arrived (gaps in ``seq``): the acquisition is incomplete."""
        self._ensure_open()
        self.ledger.note_lost_messages(count)
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

    def _guard(self, operation: Callable[..., None], *args: Any) -> None:
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
            self._image.append(chunks)
        finally:
            stored = self.frames_in_file - first
            self._sidecar.append(
                (first + offset, meta)
                for offset, meta in enumerate(frame_metadata[:stored])
                if meta
            )
            self._journal.append({"frames": self.frames_in_file})
            self.ledger.note_written(stored)

    def _zero_fill(self, count: int) -> None:
        first = self.frames_in_file
        self._journal.append({"missing": [first, first + count - 1]})
        self._image.append_empty(count)
        self.ledger.note_missing(first, count)
        self._journal.append({"frames": self.frames_in_file})

    def sync(self) -> None:
        """Force everything handed to the OS so far to stable storage."""
        with self._sync_lock:
            if self._closing.is_set():
                return
            self._image.sync()
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
            image_name = self._finish_image(errors)
            if errors:
                reason = FinishReason.ERROR
            self._record = self.ledger.record(
                reason,
                self._files_record(image_name),
                self.frames_in_file,
                "; ".join(errors) or None,
            )
            metadata_written = self._write_metadata(errors)
        finally:
            self.folder.close()
        if image_name != self.files.image or not metadata_written:
            raise WriteError(self._record.error or "finalize failed", self._record)
        return self._record

    def _finish_image(self, errors: list[str]) -> str:
        """Close, describe and rename the image; return the name it ends up under.

        Each step degrades gracefully: an image that cannot be closed stays under its
        temporary name for ``framesink recover``; one whose metadata cannot be embedded
        is still a readable image.
        """
        try:
            self._close_image()
        except (OSError, ValueError) as exc:
            errors.append(
                f"could not close {self.files.partial}: {exc}; "
                "`framesink recover` rebuilds it from the journal once the cause is fixed"
            )
            self._close_quietly()
            return self.files.partial
        try:
            self._describe_image()
        except (OSError, ValueError) as exc:
            errors.append(f"could not embed the metadata: {exc}; the pixels are intact")
        try:
            self._sync_file(self.files.partial)
            self.folder.rename(self.files.partial, self.files.image)
            self.folder.sync()
        except OSError as exc:
            errors.append(f"could not rename {self.files.partial}: {exc}")
            return self.files.partial
        return self.files.image

    def _close_image(self) -> None:
        if self._failure is None:
            try:
                self._pad_to_whole_step()
            except OSError as exc:
                self._failure = exc
        self._image.close()
        self._sidecar.close()

    def _pad_to_whole_step(self) -> None:
        padding = self.layout.padded_count(self.frames_in_file) - self.frames_in_file
        if padding:
            self._zero_fill(padding)

    def _describe_image(self) -> None:
        self._image.describe(
            {k: v for k, v in self.metadata.items() if k != "notes"},
            read_sidecar(self.folder, self.files.sidecar),
        )

    def _sync_file(self, name: str) -> None:
        descriptor = self.folder.open(name)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _close_quietly(self) -> None:
        for close in (self._image.close_quietly, self._sidecar.close):
            try:
                close()
            except (OSError, ValueError):
                continue

    def _files_record(self, image_name: str) -> AcquisitionFiles:
        sidecar = self.files.sidecar if self._sidecar.exists else None
        aliases = dict.fromkeys(self.format.record_aliases, image_name)
        return AcquisitionFiles.model_validate({**aliases, "image": image_name, "sidecar": sidecar})

    def _write_metadata(self, errors: list[str]) -> bool:
        assert self._record is not None
        try:
            write_json_atomically(
                self.folder,
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
        if self._record.files.image == self.files.image:
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
