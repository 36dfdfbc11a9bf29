"""Durable file operations in an acquisition folder, and error texts an operator can act on."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core import METADATA_FILE, RESERVED_METADATA_KEY, AcquisitionRecord
from ._folder import Folder

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


def write_json_atomically(folder: Folder, name: str, document: Mapping[str, Any]) -> None:
    """Write ``document`` as ``name`` in ``folder`` via a temporary file, fsync and rename."""
    temporary = f".{name}.tmp"
    with folder.create_text(temporary, fresh=True) as handle:
        json.dump(document, handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    folder.rename(temporary, name)
    folder.sync()


def read_record(folder: Path) -> AcquisitionRecord:
    """The acquisition record in ``folder``'s metadata.json."""
    document = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    return AcquisitionRecord.model_validate(document[RESERVED_METADATA_KEY])
