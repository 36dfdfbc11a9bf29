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
from ._format import ImageFormat
from ._journal import JournalHeader
from ._live import LiveFiles
from ._paths import folder_is_taken

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
        image_format.check_layout(self.layout, acquisition)
        self.format = image_format
        self.options = options
        self.folder = folder if isinstance(folder, Folder) else _open_folder(folder)
        self.acquisition = acquisition or self.name
        self.ledger = Ledger(
            self.acquisition,
            self.layout,
            started,
            format_name=image_format.name,
            options=options,
        )
        self.fsync_interval = fsync_interval
        self.files = OutputFiles(self.name, image_format.suffix)
        self._failure: OSError | None = None
        self._record: AcquisitionRecord | None = None
        try:
            self._prepare_folder(overwrite)
            self._live = LiveFiles(
                self.folder,
                self.files,
                image_format,
                self.layout,
                options,
                header=_journal_header(self.ledger, self.name, self.files, self.metadata),
            )
        except BaseException:
            if not isinstance(folder, Folder):
                self.folder.close()
            raise
        self._live.sync_every(fsync_interval, self.name)

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
    def frames_in_file(self) -> int:
        """Frames (written or zero-filled) the image holds."""
        return self._live.frames

    @property
    def direct_io(self) -> bool:
        """True if pixels were written past the page cache (O_DIRECT)."""
        return self._live.image.is_direct

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

    def _prepare_folder(self, overwrite: bool) -> None:
        if folder_is_taken(self.folder, self.files) and not overwrite:
            raise FileExistsError(f"{self.path} already holds files of acquisition {self.name!r}")
        # A sidecar alone is a leftover (its acquisition's other files are gone).
        for name in self.files.all if overwrite else (self.files.sidecar,):
            self.folder.remove(name)

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
        frames = [self._frames_of(chunk.frames) for chunk in chunks]
        metadata: list[FrameMetadata] = []
        for stack, chunk in zip(frames, chunks, strict=True):
            if chunk.metadata is not None and len(chunk.metadata) != len(stack):
                raise ValueError(
                    f"got {len(chunk.metadata)} frame metadata for {len(stack)} frames"
                )
            metadata.extend([None] * len(stack) if chunk.metadata is None else chunk.metadata)
        self.layout.check_room(self.frames_in_file, len(metadata))
        self._guard(self._append, frames, metadata)

    def skip(self, count: int) -> None:
        """Record ``count`` frames as missing; they are zero-filled in the file."""
        if count < 1:
            raise ValueError(f"skip count must be >= 1; got {count}")
        self.layout.check_room(self.frames_in_file, count)
        self._guard(self._zero_fill, count)

    def note_dropped(self, count: int) -> None:
        """Count frames that arrived too late or twice and were not written."""
        self._ensure_open()
        self.ledger.note_dropped(count)
        self._live.journal.append({"dropped": count})

    def note_lost_messages(self, count: int) -> None:
        """Count messages that never arrived (gaps in ``seq``): the acquisition is incomplete."""
        self._ensure_open()
        self.ledger.note_lost_messages(count)
        self._live.journal.append({"lost_messages": count})

    def _frames_of(self, frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self._ensure_open()
        return self.layout.as_frames(frames)

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
        """Only frames that reached the image (and their metadata lines) count as written."""
        first = self.frames_in_file
        try:
            self._live.append(chunks, frame_metadata)
        finally:
            self.ledger.note_written(self.frames_in_file - first)

    def _zero_fill(self, count: int) -> None:
        first = self.frames_in_file
        self._live.zero_fill(count)
        self.ledger.note_missing(first, count)

    def sync(self) -> None:
        """Force everything handed to the OS so far to stable storage."""
        self._live.sync()

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
        self._live.stop_syncing()
        reason = FinishReason(reason)
        if metadata:
            self.metadata.update({k: v for k, v in metadata.items() if k != RESERVED_METADATA_KEY})
            self._live.journal.append({"stop_metadata": dict(metadata)})
        errors = [error] if error else []
        if self._failure is not None and not error:
            errors.append(f"write failed: {describe_os_error(self._failure)}")
        try:
            self._pad_to_whole_step()
            described = {k: v for k, v in self.metadata.items() if k != "notes"}
            image_name = self._live.complete(described, errors)
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

    def _pad_to_whole_step(self) -> None:
        """Zero-fill to the next whole step of the leading axis (a failure is recorded)."""
        if self._failure is not None:
            return
        padding = self.layout.padded_count(self.frames_in_file) - self.frames_in_file
        try:
            if padding:
                self._zero_fill(padding)
        except OSError as exc:
            self._failure = exc

    def _files_record(self, image_name: str) -> AcquisitionFiles:
        sidecar = self.files.sidecar if self._live.sidecar.exists else None
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
            self._live.journal.close()
            return False
        if self._record.files.image == self.files.image:
            self._live.journal.remove()
        else:
            self._live.journal.append({"error": self._record.error})
            self._live.journal.close()
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


def _journal_header(
    ledger: Ledger, name: str, files: OutputFiles, metadata: dict[str, Any]
) -> JournalHeader:
    """What recovery needs to rebuild the acquisition ``ledger`` keeps the counts of."""
    layout = ledger.layout
    return JournalHeader(
        acquisition=ledger.acquisition,
        format=ledger.format_name,
        options=dataclasses.asdict(ledger.options),
        name=name,
        image=files.image,
        partial=files.partial,
        sidecar=files.sidecar,
        axes=layout.axes,
        dtype=layout.dtype.name,
        frame_shape=list(layout.frame_shape),
        shape=list(layout.leading_shape),
        metadata=metadata,
        started=ledger.started,
        version=__version__,
    )


def _open_folder(path: str | Path) -> Folder:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output path {folder} exists and is not a directory")
    return Folder.at(folder)
