"""Confine acquisition folders to the data root and never reuse a taken folder.

Names are checked first (no controls, no reserved names, no ``..``); the folder is
then opened from the data root down without following links (:class:`Folder`), so a
symlink below the root, planted before or swapped in during the start, is refused.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path, PurePosixPath

from ..core import (
    NAME_MAX_BYTES,
    ExistsPolicy,
    FramesinkError,
    OutputFiles,
    check_characters,
    check_output_name,
    is_reserved,
)
from ._folder import Folder

MAX_SUFFIX = 9999


class PathError(FramesinkError, ValueError):
    """An output location that framesink refuses to write to."""


def relative_parts(output_path: str) -> tuple[str, ...]:
    """The components of ``output_path``; PathError unless it is a plain relative path."""
    try:
        check_characters(output_path, "output_path")
    except ValueError as exc:
        raise PathError(str(exc)) from None
    if "\\" in output_path:
        raise PathError(f"output_path {output_path!r} holds backslashes")
    path = PurePosixPath(output_path)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", output_path):
        raise PathError(f"output_path {output_path!r} must be relative to the data root")
    if ".." in path.parts:
        raise PathError(f"output_path {output_path!r} must not contain '..'")
    parts = tuple(part for part in path.parts if part != ".")
    for part in parts:
        if is_reserved(part):
            raise PathError(f"output_path component {part!r} is reserved for framesink itself")
        if len(part.encode()) > NAME_MAX_BYTES - len("_9999"):
            raise PathError(f"output_path component {part[:40]!r}... is too long")
    return parts


def folder_is_taken(folder: Folder, files: OutputFiles) -> bool:
    """True when ``folder`` already holds files of the acquisition named by ``files``."""
    return any(folder.exists(name) for name in files.claiming)


def open_output_folder(
    data_root: Path, output_path: str, files: OutputFiles, policy: ExistsPolicy
) -> Folder:
    """Open (creating it) the folder an acquisition will be written to.

    Raises PathError for a location outside the data root (absolute, ``..``, a link
    below the root), a bad or reserved name, or a taken folder under the ``error``
    policy. A refused location leaves no folder behind.
    """
    output_name = files.name
    try:
        check_output_name(output_name)
    except ValueError as exc:
        raise PathError(str(exc)) from None
    parts = relative_parts(output_path)
    root = data_root.resolve(strict=True)
    folder = _open(root, parts, output_path)
    if not folder_is_taken(folder, files):
        return folder
    folder.discard_created()
    folder.close()
    if policy is ExistsPolicy.ERROR:
        raise PathError(
            f"{root.joinpath(*parts)} already holds acquisition files for {output_name!r}"
        )
    if not parts:
        raise PathError("the data root itself already holds this acquisition; give an output_path")
    for suffix in range(1, MAX_SUFFIX + 1):
        candidate = _open(root, (*parts[:-1], f"{parts[-1]}_{suffix}"), output_path)
        if not folder_is_taken(candidate, files):
            return candidate
        candidate.close()
    raise PathError(f"no free folder name after {parts[-1]}_{MAX_SUFFIX}")


def _open(root: Path, parts: tuple[str, ...], output_path: str) -> Folder:
    try:
        return Folder.below(root, parts)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise PathError(
            f"output_path {output_path!r} leads outside the data root or through something "
            f"that is not a folder: {exc.strerror or exc}"
        ) from None
