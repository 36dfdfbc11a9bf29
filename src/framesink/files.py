"""Names and durable file operations of an acquisition folder."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .journal import JOURNAL_FILE
from .record import METADATA_FILE

PARTIAL_SUFFIX = ".partial"
TIFF_SUFFIX = ".ome.tiff"
SIDECAR_SUFFIX = ".frames.jsonl"


def check_output_name(name: str) -> str:
    """Return ``name`` if it is a plain file stem, else raise ValueError."""
    if (
        not name
        or name in {".", ".."}
        or any(c in name for c in "/\\\0")
        or name != name.strip()
        or len(name) > 200
    ):
        raise ValueError(
            f"output_name must be a plain file name stem (no separators); got {name!r}"
        )
    return name


def output_files(name: str) -> dict[str, str]:
    """Every file name an acquisition called ``name`` may leave in its folder."""
    tiff = name + TIFF_SUFFIX
    return {
        "tiff": tiff,
        "partial": tiff + PARTIAL_SUFFIX,
        "sidecar": name + SIDECAR_SUFFIX,
        "journal": JOURNAL_FILE,
        "metadata": METADATA_FILE,
    }


def folder_is_taken(folder: Path, name: str) -> bool:
    """True when ``folder`` already holds an acquisition's files for ``name``."""
    files = output_files(name)
    return any((folder / files[key]).exists() for key in ("tiff", "partial", "journal", "metadata"))


_ERRNO_HINTS = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error (failing disk?)",
}


def describe_os_error(exc: OSError) -> str:
    """A message an operator can act on, for a failed file operation."""
    if exc.errno in _ERRNO_HINTS:
        return _ERRNO_HINTS[exc.errno]
    if exc.errno is None and "written" in str(exc):
        return f"short write, the disk is probably full or a size limit was reached: {exc}"
    return str(exc)


def write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` via a temporary file, fsync and rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make renames and creations in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
