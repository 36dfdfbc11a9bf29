"""Durable file operations in an acquisition folder, and error texts an operator can act on."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core import METADATA_FILE, RESERVED_METADATA_KEY, AcquisitionRecord, OutputFiles


def folder_is_taken(folder: Path, files: OutputFiles) -> bool:
    """True when ``folder`` already holds files of the acquisition named by ``files``."""
    return any((folder / name).exists() for name in files.claiming)


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
    temporary.unlink(missing_ok=True)
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


def read_record(folder: Path) -> AcquisitionRecord:
    """The acquisition record in ``folder``'s metadata.json."""
    document = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    return AcquisitionRecord.model_validate(document[RESERVED_METADATA_KEY])
