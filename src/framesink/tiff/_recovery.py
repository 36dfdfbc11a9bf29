"""Rebuild acquisitions interrupted by SIGKILL or power loss.

A crashed writer leaves ``<name>.ome.tiff.partial`` (a BigTIFF whose first IFD is on
disk and whose frames follow it contiguously) and the journal. Every complete frame
on disk is copied into a fresh OME-TIFF; the zero-filled gaps, dropped counts and stop
metadata come from the journal.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..core import (
    JOURNAL_FILE,
    METADATA_TEMP,
    RECOVERY_FAILED_FILE,
    RECOVERY_FOLDER,
    AcquisitionRecord,
    FinishReason,
    WriteError,
)
from ._journal import JournalInUseError, JournalState, lock_journal, read_journal
from ._sidecar import copy_sidecar
from ._writer import StreamWriter

log = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 16 << 20
"""Frames are copied through one reused buffer of this size (memory stays flat)."""


class RecoveryError(RuntimeError):
    """An interrupted acquisition could not be rebuilt."""


def find_interrupted(path: str | Path) -> list[Path]:
    """Acquisition folders under ``path`` (or ``path`` itself) that hold a journal."""
    root = Path(path)
    if (root / JOURNAL_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise RecoveryError(f"{root} is not a folder")
    return sorted(
        journal.parent
        for journal in root.rglob(JOURNAL_FILE)
        if RECOVERY_FOLDER not in journal.parts and not journal.is_symlink()
    )


@dataclass(frozen=True)
class RecoveryOutcome:
    """What happened to one interrupted acquisition folder."""

    folder: Path
    record: AcquisitionRecord | None = None
    error: str | None = None


def recover_each(path: str | Path, *, retry_failed: bool = True) -> Iterator[RecoveryOutcome]:
    """Recover every interrupted acquisition at or under ``path``, one folder at a time.

    Whatever goes wrong in one folder (even running out of memory) is reported for it
    and written to a marker file in it; the other folders go on. With
    ``retry_failed=False`` a folder with such a marker is reported again, not retried
    (the daemon at start: a folder that failed once must not stop it again).
    """
    for folder in find_interrupted(path):
        marker = folder / RECOVERY_FAILED_FILE
        if not retry_failed and marker.is_file():
            yield RecoveryOutcome(folder, error=marker.read_text(errors="replace").strip())
            continue
        try:
            record = recover_folder(folder)
        except JournalInUseError as exc:
            log.info("skipping %s: %s", folder, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - reported and marked; the other folders go on
            error = f"{type(exc).__name__}: {exc}"
            log.error("could not recover %s: %s", folder, error)
            _mark_failed(marker, error)
            yield RecoveryOutcome(folder, error=error)
            continue
        marker.unlink(missing_ok=True)
        yield RecoveryOutcome(folder, record=record)


def recover(path: str | Path) -> list[AcquisitionRecord]:
    """Recover every interrupted acquisition at or under ``path``; return their records.

    An acquisition that cannot be recovered is logged, marked and skipped, so one
    damaged folder does not block the others; RecoveryError is raised at the end if
    any failed.
    """
    outcomes = list(recover_each(path))
    failures = [f"{outcome.folder}: {outcome.error}" for outcome in outcomes if outcome.error]
    if failures:
        raise RecoveryError("; ".join(failures))
    return [outcome.record for outcome in outcomes if outcome.record is not None]


def _mark_failed(marker: Path, error: str) -> None:
    try:
        marker.write_text(
            f"framesink could not recover this acquisition: {error}\n"
            "Fix the cause, then run `framesink recover` on this folder.\n",
            encoding="utf-8",
        )
    except OSError as exc:
        log.error("could not write %s: %s", marker, exc)


def recover_folder(folder: Path) -> AcquisitionRecord:
    """Rebuild the interrupted acquisition in ``folder`` (JournalInUseError if it is live)."""
    with (folder / JOURNAL_FILE).open("rb") as held:
        lock_journal(held, folder / JOURNAL_FILE)
        return _rebuild(folder, read_journal(folder / JOURNAL_FILE))


def _rebuild(folder: Path, state: JournalState) -> AcquisitionRecord:
    header = state.header
    partial = folder / header.partial
    # A crash after the rename but before metadata.json leaves the final TIFF as the source.
    source = partial if partial.exists() else folder / header.tiff
    frame_bytes = int(np.prod(header.frame_shape)) * np.dtype(header.dtype).itemsize
    frames_on_disk, data_offset = _frames_on_disk(source, frame_bytes, state.frames)
    workspace = folder / RECOVERY_FOLDER
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir()
    if (folder / header.sidecar).exists():
        copy_sidecar(folder / header.sidecar, workspace / header.sidecar, frames_on_disk)
    writer = StreamWriter(
        workspace,
        header.name,
        header.metadata,
        dtype=header.dtype,
        frame_shape=header.frame_shape,
        shape=header.shape,
        acquisition=header.acquisition,
        fsync_interval=None,
    )
    writer.started = header.started
    try:
        _copy_frames(writer, source, data_offset, frames_on_disk, state)
        if state.frames_dropped:
            writer.note_dropped(state.frames_dropped)
        if state.messages_lost:
            writer.note_lost_messages(state.messages_lost)
        record = writer.finalize(
            FinishReason.RECOVERED, error=state.error, metadata=state.stop_metadata or None
        )
    except WriteError as exc:
        raise RecoveryError(str(exc)) from exc
    _move_into_place(workspace, folder, record)
    partial.unlink(missing_ok=True)
    (folder / METADATA_TEMP).unlink(missing_ok=True)
    (folder / JOURNAL_FILE).unlink(missing_ok=True)
    shutil.rmtree(workspace, ignore_errors=True)
    log.info(
        "recovered %s: %d frames written, %d missing",
        folder,
        record.frames_written,
        record.frames_missing,
    )
    return record


def _frames_on_disk(source: Path, frame_bytes: int, journaled: int | None) -> tuple[int, int]:
    """Complete frames in ``source`` that recovery may keep, and where its pixels start.

    The journal's count decides: bytes after the last journaled frame may be a page
    index (IFDs) written at finalize, not pixels. Frames the journal counts but whose
    bytes never reached the disk (power loss) are cut off by the file's size.
    """
    if not source.exists() or source.stat().st_size == 0:
        return 0, 0
    try:
        with tifffile.TiffFile(source) as tiff:
            pages = len(tiff.pages)
            first = tiff.pages[0]
            offset = int(first.dataoffsets[0])
            closed = pages > 1 or str(getattr(first, "description", "")).startswith("<?xml")
    except (tifffile.TiffFileError, IndexError, ValueError, OSError):
        return 0, 0
    in_file = max(0, (source.stat().st_size - offset) // frame_bytes)
    if journaled is not None:
        return min(journaled, in_file), offset
    # A version 1 journal has no frame count: the file's own page index, else its size.
    log.warning("%s: journal without frame counts; counting frames from the file", source.name)
    return (pages if closed else in_file), offset


def _copy_frames(
    writer: StreamWriter, partial: Path, data_offset: int, frames: int, state: JournalState
) -> None:
    if frames == 0:
        return
    capacity = writer.layout.capacity
    frames = frames if capacity is None else min(frames, capacity)
    frame_bytes = writer.layout.frame_bytes
    step = max(1, COPY_CHUNK_BYTES // frame_bytes)
    buffer = np.empty(step * frame_bytes, np.uint8)
    with partial.open("rb", buffering=0) as source:
        for start, stop, missing in _segments(frames, state.missing_ranges):
            if missing:
                writer.skip(stop - start)
                continue
            for first in range(start, stop, step):
                count = min(stop, first + step) - first
                chunk = buffer[: count * frame_bytes]
                source.seek(data_offset + first * frame_bytes)
                if not _read_exactly(source, chunk):
                    raise RecoveryError(f"{partial.name} ended while frame {first} was read")
                writer.write(
                    chunk.view(writer.layout.dtype).reshape(count, *writer.layout.frame_shape)
                )


def _read_exactly(source: io.RawIOBase, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
    """Fill ``into`` from the current position; False if the file ends first."""
    view, done = into.data, 0
    while done < into.nbytes:
        got = source.readinto(view[done:])
        if not got:
            return False
        done += got
    return True


def _segments(frames: int, missing_ranges: list[list[int]]) -> Iterator[tuple[int, int, bool]]:
    """Split ``range(frames)`` into written and missing runs (stop exclusive)."""
    position = 0
    for recorded_first, recorded_last in sorted(missing_ranges):
        first, last = max(recorded_first, position), min(recorded_last, frames - 1)
        if first > last:
            continue
        if first > position:
            yield position, first, False
        yield first, last + 1, True
        position = last + 1
    if position < frames:
        yield position, frames, False


def _move_into_place(workspace: Path, folder: Path, record: AcquisitionRecord) -> None:
    names = [record.files.tiff, record.files.sidecar, record.files.metadata]
    for name in names:
        if name:
            (workspace / name).replace(folder / name)
