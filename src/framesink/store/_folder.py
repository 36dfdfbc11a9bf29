"""An acquisition folder held by a directory descriptor: no file operation follows a link.

The daemon opens each folder from the data root down, one component at a time, with
``O_NOFOLLOW``: a symlink anywhere below the root is refused, and a folder swapped for
a link afterwards changes nothing, because every file is then created, opened, renamed
and removed relative to the descriptor. Files are created with ``O_EXCL | O_NOFOLLOW``
and existing paths are never opened to write: a planted link or file makes the
operation fail instead of writing through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o644
FOLDER_MODE = 0o755


class Folder:
    """A directory descriptor and the path it was opened as (for messages only)."""

    def __init__(self, fd: int, path: Path, created: Sequence[tuple[int, str]] = ()) -> None:
        self.fd = fd
        self.path = path
        self._created = list(created)

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def below(cls, root: Path, parts: Sequence[str]) -> Self:
        """Open ``root/parts...``, creating missing folders, following no link below root.

        ``root`` itself is opened as given (the administrator's choice). Raises OSError
        (ELOOP or ENOTDIR for a link or a file in the way).
        """
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        created: list[tuple[int, str]] = []
        try:
            for part in parts:
                fd = _step(fd, part, created)
        except BaseException:
            _discard(created)
            os.close(fd)
            raise
        return cls(fd, root.joinpath(*parts), created)

    @classmethod
    def at(cls, path: str | Path, *, create: bool = True) -> Self:
        """Open a folder given by a caller's own path (links in it are the caller's)."""
        folder = Path(path)
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return cls(os.open(folder, _DIRECTORY_FLAGS), folder)

    def subfolder(self, name: str) -> Folder:
        """Create the folder ``name`` in this one (it must not exist) and open it."""
        os.mkdir(name, FOLDER_MODE, dir_fd=self.fd)
        return Folder(os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd), self.path / name)

    def open_subfolder(self, name: str) -> Folder:
        """Open the existing folder ``name`` in this one (a link is refused)."""
        return Folder(os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd), self.path / name)

    def duplicate(self) -> Folder:
        """Another handle on the same folder, to give away (closing one keeps the other)."""
        return Folder(os.dup(self.fd), self.path)

    def discard_created(self) -> None:
        """Remove the folders ``below`` created, where still empty (a refused start)."""
        _discard(self._created)
        self._created = []

    def close(self) -> None:
        for parent, _ in self._created:
            os.close(parent)
        self._created = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- files -------------------------------------------------------------------------
    def create(self, name: str, flags: int = os.O_WRONLY) -> int:
        """A new file ``name`` (never an existing one, never through a link)."""
        return os.open(name, flags | _CREATE_FLAGS, FILE_MODE, dir_fd=self.fd)

    def create_binary(self, name: str) -> IO[bytes]:
        return os.fdopen(self.create(name, os.O_RDWR), "w+b")

    def create_text(self, name: str, *, fresh: bool = False) -> IO[str]:
        """A new UTF-8 text file ``name`` (``fresh``: after removing a leftover)."""
        descriptor = self.create_fresh(name) if fresh else self.create(name)
        return os.fdopen(descriptor, "w", encoding="utf-8")

    def create_fresh(self, name: str, flags: int = os.O_WRONLY) -> int:
        """Like ``create``, after removing a leftover ``name`` (unlinking follows no link)."""
        self.unlink(name)
        return self.create(name, flags)

    def open(self, name: str, flags: int = os.O_RDONLY) -> int:
        """An existing regular file ``name`` (refused if it is a link)."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)

    def open_text(self, name: str) -> IO[str]:
        """An existing UTF-8 text file ``name``, for reading (refused if it is a link)."""
        return os.fdopen(self.open(name), encoding="utf-8")

    def open_binary(self, name: str, mode: str = "rb") -> IO[bytes]:
        flags = os.O_RDWR if "+" in mode else os.O_RDONLY
        return os.fdopen(self.open(name, flags), mode)

    def is_file(self, name: str) -> bool:
        """True for a regular file ``name`` (a link to one does not count)."""
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(info.st_mode)

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def size(self, name: str) -> int:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size

    def unlink(self, name: str) -> None:
        """Remove ``name`` if present (a link is removed, never what it points to)."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return

    def remove(self, name: str) -> None:
        """Remove ``name`` if present: a file, a link, or a folder with all it holds
        (images of some formats are folders)."""
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)
        else:
            self.unlink(name)

    def rename(self, source: str, target: str, into: Folder | None = None) -> None:
        """Rename ``source`` to ``target`` (in ``into``, default this folder), atomically."""
        destination = self if into is None else into
        os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=destination.fd)

    def sync(self) -> None:
        """Make creations and renames in this folder durable."""
        os.fsync(self.fd)

    def __repr__(self) -> str:
        return f"Folder({str(self.path)!r})"


def _step(parent: int, part: str, created: list[tuple[int, str]]) -> int:
    """Open (creating it if missing) the folder ``part`` of ``parent``; close ``parent``."""
    try:
        child = os.open(part, _DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        os.mkdir(part, FOLDER_MODE, dir_fd=parent)
        created.append((os.dup(parent), part))
        child = os.open(part, _DIRECTORY_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(exc.errno, f"{part!r} is a link or not a folder; refused") from None
        raise
    os.close(parent)
    return child


def _discard(created: list[tuple[int, str]]) -> None:
    for parent, name in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent)
        os.close(parent)
