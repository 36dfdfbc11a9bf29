"""The journal: a small append-only file that makes an interrupted acquisition recoverable.

Line one describes the acquisition (everything needed to rebuild the file); later
lines record events the TIFF alone cannot tell: how many frames the file holds after
each write (recovery trusts this count, never the file's size: bytes after the last
counted frame may be a half-written page index, not pixels), missing ranges, dropped
frames and metadata merged at stop. A torn last line (power loss) is ignored when read
back. The writer holds an exclusive flock on it, so recovery never touches a live
acquisition.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import IO, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from ..core import JOURNAL_FILE, FramesinkError
from ._folder import Folder

JOURNAL_VERSION = 3
"""Version 2 added the ``frames`` events, version 3 the format and its options (earlier
journals are OME-TIFF ones); all are still read."""

FORMAT_OF_EARLIER_JOURNALS = "ome-tiff"


class JournalHeader(BaseModel):
    """First line of a journal."""

    model_config = ConfigDict(frozen=True)

    journal: int = JOURNAL_VERSION
    acquisition: str
    format: str = FORMAT_OF_EARLIER_JOURNALS
    options: dict[str, Any] = {}
    """The format's :class:`~framesink.core.StorageOptions` that shape the image."""
    name: str
    image: str = Field(validation_alias=AliasChoices("image", "tiff"))
    partial: str
    sidecar: str
    axes: str
    dtype: str
    frame_shape: list[int]
    shape: list[int | None]
    metadata: dict[str, Any]
    started: str
    version: str


class JournalState(BaseModel):
    """What a journal says about an acquisition."""

    header: JournalHeader
    frames: int | None = None
    """Frames the file held at the last ``frames`` event (None in a version 1 journal)."""
    synced: int = 0
    """Frames the last ``synced`` event says were on stable storage (fsynced)."""
    last_written: float | None = None
    """When the journal was last written (its mtime, seconds since the epoch)."""
    missing_ranges: list[list[int]] = []
    frames_dropped: int = 0
    messages_lost: int = 0
    stop_metadata: dict[str, Any] = {}
    error: str | None = None


class JournalInUseError(FramesinkError, RuntimeError):
    """A live writer holds this journal: its acquisition is running, not interrupted."""


def lock_journal(handle: IO[Any], path: Path) -> None:
    """Take the journal's exclusive lock; the OS drops it when its holder dies."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalInUseError(
            f"{path} belongs to an acquisition that is still being written"
        ) from None


class Journal:
    """Appends events to an acquisition's journal; each append reaches the OS at once
    (from any thread: the writer's events and the fsync thread's ``synced``)."""

    def __init__(self, folder: Folder, header: JournalHeader) -> None:
        self.folder = folder
        self.path = folder.path / JOURNAL_FILE
        self._lock = threading.Lock()
        self._handle = folder.create_text(JOURNAL_FILE)
        lock_journal(self._handle, self.path)
        self.append(header.model_dump(mode="json"))
        self.sync()

    def append(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, allow_nan=False) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def sync(self) -> None:
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def remove(self) -> None:
        self.close()
        self.folder.unlink(JOURNAL_FILE)


def read_journal(handle: IO[bytes], path: Path) -> JournalState:
    """Parse the journal open as ``handle``; raise ValueError when its header is unreadable."""
    handle.seek(0)
    lines = handle.read().decode("utf-8", errors="replace").splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    try:
        header = JournalHeader.model_validate_json(lines[0])
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable journal header: {exc}") from None
    state = JournalState(header=header, last_written=os.fstat(handle.fileno()).st_mtime)
    for line in lines[1:]:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("frames"), int):
            state.frames = event["frames"]
        if isinstance(event.get("synced"), int):
            state.synced = event["synced"]
        if "missing" in event:
            state.missing_ranges.append([int(event["missing"][0]), int(event["missing"][1])])
        if "dropped" in event:
            state.frames_dropped += int(event["dropped"])
        if "lost_messages" in event:
            state.messages_lost += int(event["lost_messages"])
        if isinstance(event.get("stop_metadata"), dict):
            state.stop_metadata.update(event["stop_metadata"])
        if "error" in event:
            state.error = str(event["error"])
    return state
