"""Confine acquisition folders to the data root and never reuse a taken folder."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path, PurePosixPath

from ..core import OutputFiles, check_output_name
from ._files import folder_is_taken

MAX_SUFFIX = 9999
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class PathError(ValueError):
    """An output location that framesink refuses to write to."""


class ExistsPolicy(StrEnum):
    """What to do when the target folder already holds an acquisition."""

    INCREMENT = "increment"
    ERROR = "error"


def _relative_parts(output_path: str) -> tuple[str, ...]:
    if _CONTROL_CHARACTERS.search(output_path) or "\\" in output_path:
        raise PathError(f"output_path {output_path!r} holds control characters or backslashes")
    path = PurePosixPath(output_path)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", output_path):
        raise PathError(f"output_path {output_path!r} must be relative to the data root")
    if ".." in path.parts:
        raise PathError(f"output_path {output_path!r} must not contain '..'")
    return tuple(part for part in path.parts if part != ".")


def _inside(root: Path, candidate: Path) -> bool:
    return candidate == root or root in candidate.parents


def resolve_output_folder(
    data_root: Path, output_path: str, output_name: str, policy: ExistsPolicy
) -> Path:
    """Create and return the folder an acquisition will be written to.

    Raises PathError for a location outside the data root (absolute, ``..``, or via a
    symlink), a bad name, or a taken folder under the ``error`` policy.
    """
    try:
        check_output_name(output_name)
    except ValueError as exc:
        raise PathError(str(exc)) from None
    root = data_root.resolve(strict=True)
    folder = root.joinpath(*_relative_parts(output_path))
    _check_confined(root, folder, output_path)
    if folder_is_taken(folder, OutputFiles(output_name)):
        if policy is ExistsPolicy.ERROR:
            raise PathError(f"{folder} already holds acquisition files for {output_name!r}")
        folder = _free_sibling(root, folder, output_name)
    folder.mkdir(parents=True, exist_ok=True)
    _check_confined(root, folder, output_path)
    return folder


def _check_confined(root: Path, folder: Path, output_path: str) -> None:
    if not _inside(root, folder.resolve()):
        raise PathError(f"output_path {output_path!r} leads outside the data root")
    if folder.exists() and not folder.is_dir():
        raise PathError(f"output_path {output_path!r} exists and is not a folder")


def _free_sibling(root: Path, folder: Path, output_name: str) -> Path:
    if folder == root:
        raise PathError("the data root itself already holds this acquisition; give an output_path")
    for suffix in range(1, MAX_SUFFIX + 1):
        candidate = folder.with_name(f"{folder.name}_{suffix}")
        if not candidate.exists() or (
            candidate.is_dir() and not folder_is_taken(candidate, OutputFiles(output_name))
        ):
            _check_confined(root, candidate, str(candidate))
            return candidate
    raise PathError(f"no free folder name after {folder.name}_{MAX_SUFFIX}")
