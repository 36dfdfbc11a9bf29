"""Rebuild acquisitions interrupted by SIGKILL or power loss, whatever their format.

A crashed writer leaves its partial image and the journal, whose header names the
format. The format reopens the image (:meth:`ImageFormat.open_interrupted`) and tells
how many frames are complete on disk; each is copied into a fresh image of the same
format, and the zero-filled gaps, dropped counts and stop metadata come from the
journal. Each folder is recovered on its own: one that fails is reported and marked,
the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import (
    JOURNAL_FILE,
    METADATA_TEMP,
    RECOVERY_FAILED_FILE,
    RECOVERY_FOLDER,
    AcquisitionRecord,
    FinishReason,
    FramesinkError,
    OutputFiles,
    StorageOptions,
    WriteError,
    check_output_name,
)
from ._folder import Folder
from ._format import ImageFormat, InterruptedImage
from ._journal import JournalInUseError, JournalState, lock_journal, read_journal
from ._sidecar import copy_sidecar
from ._writer import AcquisitionWriter

FormatLookup = Callable[[str], ImageFormat]
"""The format a journal names; raises KeyError for one this process does not know."""

log = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 16 << 20
"""Frames are copied through one reused buffer of this size (memory stays flat)."""


class RecoveryError(FramesinkError, RuntimeError):
    """An interrupted acquisition could not be rebuilt."""


def find_interrupted(path: str | Path) -> list[Path]:
    """Acquisition folders under ``path`` (or ``path`` itself) that hold a journal."""
    found = []
    for folder in _interrupted(path):
        with folder:
            found.append(folder.path)
    return found


def _interrupted(path: str | Path) -> Iterator[Folder]:
    """Each folder at or under ``path`` holding a journal, open (the caller closes it),
    in name order. The walk goes by descriptor: no path length limit, no link followed,
    and a folder that cannot be read is logged and passed over."""
    root = Path(path)
    if not root.is_dir():
        raise RecoveryError(f"{root} is not a folder")
    with Folder.at(root, create=False) as top:
        if top.is_file(JOURNAL_FILE):
            yield top.duplicate()
            return
    walk = os.fwalk(root, follow_symlinks=False, onerror=_unreadable)
    for where, folders, files, fd in walk:
        folders[:] = sorted(name for name in folders if name != RECOVERY_FOLDER)
        if JOURNAL_FILE in files:
            folder = Folder(os.dup(fd), Path(where))
            if folder.is_file(JOURNAL_FILE):
                yield folder
            else:
                folder.close()


def _unreadable(error: OSError) -> None:
    log.error("interrupted acquisitions under %s cannot be looked for: %s", error.filename, error)


@dataclass(frozen=True)
class RecoveryOutcome:
    """What happened to one interrupted acquisition folder."""

    folder: Path
    record: AcquisitionRecord | None = None
    error: str | None = None


def recover_each(
    path: str | Path, formats: FormatLookup, *, retry_failed: bool = True
) -> Iterator[RecoveryOutcome]:
    """Recover every interrupted acquisition at or under ``path``, one folder at a time.

    Whatever goes wrong in one folder (even running out of memory) is reported for it
    and written to a marker file in it; the other folders go on. With
    ``retry_failed=False`` a folder with such a marker is reported again, not retried
    (the daemon at start: a folder that failed once must not stop it again).
    """
    for folder in _interrupted(path):
        with folder:
            outcome = _recover_one(folder, formats, retry_failed)
        if outcome is not None:
            yield outcome


def _recover_one(
    folder: Folder, formats: FormatLookup, retry_failed: bool
) -> RecoveryOutcome | None:
    """Recover one folder; None when it belongs to a live writer."""
    if not retry_failed and folder.is_file(RECOVERY_FAILED_FILE):
        with folder.open_text(RECOVERY_FAILED_FILE) as marker:
            return RecoveryOutcome(folder.path, error=marker.read().strip())
    try:
        record = recover_folder(folder, formats)
    except JournalInUseError as exc:
        log.info("skipping %s: %s", folder.path, exc)
        return None
    except Exception as exc:  # noqa: BLE001 - reported and marked; the other folders go on
        error = f"{type(exc).__name__}: {exc}"
        log.error("could not recover %s: %s", folder.path, error)
        _mark_failed(folder, error)
        return RecoveryOutcome(folder.path, error=error)
    folder.unlink(RECOVERY_FAILED_FILE)
    return RecoveryOutcome(folder.path, record=record)


def recover(path: str | Path, formats: FormatLookup) -> list[AcquisitionRecord]:
    """Recover every interrupted acquisition at or under ``path``; return their records.

    An acquisition that cannot be recovered is logged, marked and skipped, so one
    damaged folder does not block the others; RecoveryError is raised at the end if
    any failed.
    """
    outcomes = list(recover_each(path, formats))
    failures = [f"{outcome.folder}: {outcome.error}" for outcome in outcomes if outcome.error]
    if failures:
        raise RecoveryError("; ".join(failures))
    return [outcome.record for outcome in outcomes if outcome.record is not None]


def _mark_failed(folder: Folder, error: str) -> None:
    text = (
        f"framesink could not recover this acquisition: {error}\n"
        "Fix the cause, then run `framesink recover` on this folder.\n"
    )
    try:
        with folder.create_text(RECOVERY_FAILED_FILE, fresh=True) as marker:
            marker.write(text)
    except OSError as exc:
        log.error("could not write %s: %s", folder.path / RECOVERY_FAILED_FILE, exc)


def recover_folder(folder: Folder, formats: FormatLookup) -> AcquisitionRecord:
    """Rebuild the interrupted acquisition in ``folder`` (JournalInUseError if it is live)."""
    path = folder.path
    with folder.open_binary(JOURNAL_FILE) as held:
        lock_journal(held, path / JOURNAL_FILE)
        state = read_journal(held, path / JOURNAL_FILE)
        image_format = _format_of(state, formats)
        _check_names(state, image_format)
        return _rebuild(folder, state, image_format)


def _format_of(state: JournalState, formats: FormatLookup) -> ImageFormat:
    try:
        return formats(state.header.format)
    except KeyError:
        raise RecoveryError(
            f"the journal names the format {state.header.format!r}, which this framesink "
            "does not know (is the package that provides it installed?)"
        ) from None


def _check_names(state: JournalState, image_format: ImageFormat) -> None:
    """The journal names only the files its acquisition may have: nothing else is touched."""
    header = state.header
    files = OutputFiles(check_output_name(header.name), image_format.suffix)
    named = (header.image, header.partial, header.sidecar)
    if named != (files.image, files.partial, files.sidecar):
        raise RecoveryError(f"the journal names unexpected files {named}")


def _rebuild(folder: Folder, state: JournalState, image_format: ImageFormat) -> AcquisitionRecord:
    header = state.header
    # A crash after the rename but before metadata.json leaves the final image as the source.
    source = header.partial if folder.exists(header.partial) else header.image
    with contextlib.ExitStack() as stack:
        image = (
            image_format.open_interrupted(folder, source, state) if folder.exists(source) else None
        )
        if image is not None:
            stack.callback(image.close)
        frames_on_disk = image.frames if image is not None else 0
        if folder.exists(RECOVERY_FOLDER):
            shutil.rmtree(RECOVERY_FOLDER, dir_fd=folder.fd)
        workspace = stack.enter_context(folder.subfolder(RECOVERY_FOLDER))
        writer = AcquisitionWriter(
            workspace.duplicate(),
            header.name,
            header.metadata,
            image_format=image_format,
            dtype=header.dtype,
            frame_shape=header.frame_shape,
            shape=header.shape,
            acquisition=header.acquisition,
            fsync_interval=None,
            options=_options(header.options),
            started=header.started,
        )
        if folder.is_file(header.sidecar):
            copy_sidecar(folder, workspace, header.sidecar, frames_on_disk)
        try:
            if image is not None:
                _copy_frames(writer, image, state, _durable_before_power_loss(state))
            _record_lost_frames(writer, state)
            if state.frames_dropped:
                writer.note_dropped(state.frames_dropped)
            if state.messages_lost:
                writer.note_lost_messages(state.messages_lost)
            record = writer.finalize(
                FinishReason.RECOVERED, error=state.error, metadata=state.stop_metadata or None
            )
        except WriteError as exc:
            raise RecoveryError(str(exc)) from exc
        _make_way_for_image(folder, source, header.partial)
        for name in (record.files.image, record.files.sidecar, record.files.metadata):
            if name:
                workspace.rename(name, name, into=folder)
    folder.remove(header.partial)
    for leftover in (METADATA_TEMP, JOURNAL_FILE):
        folder.unlink(leftover)
    shutil.rmtree(RECOVERY_FOLDER, dir_fd=folder.fd, ignore_errors=True)
    folder.sync()
    log.info(
        "recovered %s: %d frames written, %d missing",
        folder.path,
        record.frames_written,
        record.frames_missing,
    )
    return record


def _make_way_for_image(folder: Folder, source: str, partial: str) -> None:
    """A source under the final name that is a folder (formats that write folders)
    cannot be replaced by a rename: it goes back under the partial name first, where
    recovery finds it again if it is interrupted now."""
    if source != partial and folder.exists(source) and not folder.is_file(source):
        folder.rename(source, partial)


def _options(journaled: dict[str, Any]) -> StorageOptions:
    """The options the journal names (ones this version does not know are left out)."""
    known = {field.name for field in dataclasses.fields(StorageOptions)}
    return StorageOptions.create(**{k: v for k, v in journaled.items() if k in known})


def _durable_before_power_loss(state: JournalState) -> int | None:
    """After a reboot (the journal was last written before this boot), only the frames
    the last ``synced`` event names are sure to be on disk: frames after them may read
    as zeros (blocks never written). None when the machine did not go down since (a
    killed process loses nothing it handed to the operating system)."""
    booted = _boot_time()
    if booted is None or state.last_written is None or state.last_written >= booted:
        return None
    return state.synced


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _copy_frames(
    writer: AcquisitionWriter,
    image: InterruptedImage,
    state: JournalState,
    durable: int | None,
) -> None:
    """Copy every complete frame; after a power loss, frames past the ``durable`` ones
    that read as all zeros never reached the disk and are recorded missing instead."""
    frames = image.frames
    if frames == 0:
        return
    capacity = writer.layout.capacity
    frames = frames if capacity is None else min(frames, capacity)
    frame_bytes = writer.layout.frame_bytes
    step = max(1, COPY_CHUNK_BYTES // frame_bytes)
    buffer = np.empty(step * frame_bytes, np.uint8)
    for start, stop, missing in _segments(frames, state.missing_ranges):
        if missing:
            writer.skip(stop - start)
            continue
        for first in range(start, stop, step):
            count = min(stop, first + step) - first
            chunk = buffer[: count * frame_bytes]
            if not image.read(first, chunk):
                raise RecoveryError(f"the image ended while frame {first} was read")
            stack = chunk.view(writer.layout.dtype).reshape(count, *writer.layout.frame_shape)
            if durable is None or first + count <= durable:
                writer.write(stack)
            else:
                _copy_unless_blank(writer, stack, max(0, durable - first))


def _copy_unless_blank(writer: AcquisitionWriter, stack: np.ndarray[Any, Any], sure: int) -> None:
    """Write ``stack``; its frames from ``sure`` on that are all zeros are skipped."""
    blank = [index >= sure and not stack[index].any() for index in range(len(stack))]
    if any(blank):
        log.warning(
            "%s: %d frames past the last fsync read as zeros after a power loss; "
            "they are recorded missing",
            writer.name,
            sum(blank),
        )
    position = 0
    for is_blank, run in itertools.groupby(blank):
        length = len(list(run))
        if is_blank:
            writer.skip(length)
        else:
            writer.write(stack[position : position + length])
        position += length


def _record_lost_frames(writer: AcquisitionWriter, state: JournalState) -> None:
    """Frames the journal counts but the disk lost (power loss) become recorded gaps."""
    journaled = state.frames or 0
    capacity = writer.layout.capacity
    if capacity is not None:
        journaled = min(journaled, capacity)
    lost = journaled - writer.frames_in_file
    if lost > 0:
        log.warning("%s: %d journaled frames are not on disk", writer.name, lost)
        writer.skip(lost)


def read_exactly(fd: int, offset: int, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
    """Fill ``into`` from ``offset``; False if the file ends first."""
    view, done = into.data, 0
    while done < into.nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
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
