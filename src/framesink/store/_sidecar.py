"""The sidecar: per-frame metadata as JSON lines, appended as frames are written.

Symmetric with the journal: each append reaches the operating system at once, so a
killed process keeps the line of every frame it counted as written; a torn last line
(power loss) is ignored when read back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from ._folder import Folder

SidecarEntry = tuple[int, Mapping[str, Any]]


class Sidecar:
    """Appends ``{"index": i, **frame_metadata}`` lines (a frame's own ``index`` key is
    kept as ``user_index``); the file appears with its first line, replacing any leftover
    of that name (an earlier acquisition's, in a reused folder).
    """

    def __init__(self, folder: Folder, name: str) -> None:
        self.folder = folder
        self.name = name
        self._handle: IO[str] | None = None

    @property
    def exists(self) -> bool:
        return self._handle is not None or self.folder.is_file(self.name)

    def append(self, entries: Iterable[SidecarEntry]) -> None:
        """Write one line per entry and hand them to the OS."""
        lines = [_line(index, metadata) for index, metadata in entries]
        if not lines:
            return
        if self._handle is None:
            self._handle = self.folder.create_text(self.name, fresh=True)
        self._handle.write("".join(lines))
        self._handle.flush()

    def sync(self) -> None:
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Flush, fsync and close (idempotent)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                handle.close()


INDEX_KEY = "index"
USER_INDEX_KEY = "user_index"
"""Where a frame's own metadata key ``index`` goes: ``index`` is the frame number."""


def _line(index: int, metadata: Mapping[str, Any]) -> str:
    entry = {USER_INDEX_KEY if key == INDEX_KEY else key: value for key, value in metadata.items()}
    entry = {INDEX_KEY: index, **entry}
    return json.dumps(entry, allow_nan=False, ensure_ascii=False) + "\n"


def read_sidecar(folder: Folder, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(frame index, entry)`` for every complete, readable line."""
    if not folder.is_file(name):
        return
    with folder.open_text(name) as handle:
        for line in handle:
            entry = _parse(line)
            if entry is not None:
                yield int(entry[INDEX_KEY]), entry


def copy_sidecar(source: Folder, target: Folder, name: str, frames: int) -> None:
    """Copy the lines of frames below ``frames``; a torn or unreadable line is left out
    (only that line: the lines after it are still copied)."""
    with (
        source.open_text(name) as lines,
        target.create_text(name) as out,
    ):
        for line in lines:
            entry = _parse(line)
            if entry is not None and entry[INDEX_KEY] < frames:
                out.write(line)


def _parse(line: str) -> dict[str, Any] | None:
    if not line.endswith("\n"):
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get(INDEX_KEY), int):
        return None
    return entry
