"""The names of the files in an acquisition folder, and which names are acceptable (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PARTIAL_SUFFIX = ".partial"
IMAGE_SUFFIX_ROOM = 17
"""Bytes a format's image suffix plus ``.partial`` may take (``.ome.tiff.partial``)."""
SIDECAR_SUFFIX = ".frames.jsonl"
JOURNAL_FILE = "framesink-journal.jsonl"
METADATA_FILE = "metadata.json"
METADATA_TEMP = f".{METADATA_FILE}.tmp"
RECOVERY_FOLDER = ".framesink-recovery"
RECOVERY_FAILED_FILE = "framesink-recovery-failed.txt"
MAX_NAME_LENGTH = 200
NAME_MAX_BYTES = 255
"""What most filesystems allow for one name, in bytes."""
RESERVED_PREFIX = ".framesink"
RESERVED_NAMES = frozenset(
    {JOURNAL_FILE, METADATA_FILE, METADATA_TEMP, RECOVERY_FOLDER, RECOVERY_FAILED_FILE}
)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls and the marks and overrides that reorder displayed text."""


class ExistsPolicy(StrEnum):
    """What to do when the target folder already holds an acquisition."""

    INCREMENT = "increment"
    ERROR = "error"


def check_characters(text: str, what: str) -> None:
    """Raise ValueError if ``text`` holds control or text-direction characters."""
    found = _UNSAFE.search(text)
    if found:
        raise ValueError(
            f"{what} holds the control or text-direction character "
            f"U+{ord(found.group()):04X} at position {found.start()}: {printable(text)}"
        )


def is_reserved(name: str) -> bool:
    """True for names framesink uses for itself in acquisition folders."""
    return name in RESERVED_NAMES or name.startswith(RESERVED_PREFIX)


def check_output_name(name: str) -> str:
    """Return ``name`` if it is a plain file stem, else raise ValueError."""
    check_characters(name, "output_name")
    if (
        not name
        or name in {".", ".."}
        or any(c in name for c in "/\\")
        or name != name.strip()
        or len(name) > MAX_NAME_LENGTH
    ):
        raise ValueError(
            f"output_name must be a plain file name stem (no separators); got {name!r}"
        )
    if len(name.encode()) + IMAGE_SUFFIX_ROOM > NAME_MAX_BYTES:
        raise ValueError(
            f"output_name is too long: with a file suffix it would be more than "
            f"{NAME_MAX_BYTES} bytes"
        )
    if is_reserved(name):
        raise ValueError(f"output_name {name!r} is reserved for framesink's own files")
    return name


def printable(text: str) -> str:
    """``text`` with controls and text-direction marks escaped, for logs and tables."""
    return _UNSAFE.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


@dataclass(frozen=True)
class OutputFiles:
    """Every file name an acquisition called ``name`` may leave in its folder.

    ``image_suffix`` comes from the acquisition's format (``.ome.tiff``, ...).
    """

    name: str
    image_suffix: str

    def __post_init__(self) -> None:
        if len((self.image_suffix + PARTIAL_SUFFIX).encode()) > IMAGE_SUFFIX_ROOM:
            raise ValueError(f"image suffix {self.image_suffix!r} is too long")

    @property
    def image(self) -> str:
        """The finished image (a file or a folder, by format)."""
        return self.name + self.image_suffix

    @property
    def partial(self) -> str:
        """The image while it is being written."""
        return self.image + PARTIAL_SUFFIX

    @property
    def sidecar(self) -> str:
        """Per-frame metadata, one JSON line per frame."""
        return self.name + SIDECAR_SUFFIX

    @property
    def journal(self) -> str:
        """What recovery needs to rebuild an interrupted acquisition."""
        return JOURNAL_FILE

    @property
    def metadata(self) -> str:
        """The acquisition's metadata and record."""
        return METADATA_FILE

    @property
    def metadata_temp(self) -> str:
        """metadata.json while it is being written (renamed when complete)."""
        return METADATA_TEMP

    @property
    def claiming(self) -> tuple[str, ...]:
        """Names whose presence means the folder already holds this acquisition."""
        return (self.image, self.partial, self.journal, self.metadata)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.claiming, self.sidecar)
