"""The names of the files in an acquisition folder, and which names are acceptable (pure)."""

from __future__ import annotations

from dataclasses import dataclass

TIFF_SUFFIX = ".ome.tiff"
PARTIAL_SUFFIX = ".partial"
SIDECAR_SUFFIX = ".frames.jsonl"
JOURNAL_FILE = "framesink-journal.jsonl"
METADATA_FILE = "metadata.json"
METADATA_TEMP = f".{METADATA_FILE}.tmp"
RECOVERY_FOLDER = ".framesink-recovery"
RECOVERY_FAILED_FILE = "framesink-recovery-failed.txt"
MAX_NAME_LENGTH = 200


def check_output_name(name: str) -> str:
    """Return ``name`` if it is a plain file stem, else raise ValueError."""
    if (
        not name
        or name in {".", ".."}
        or any(c in name for c in "/\\\0")
        or name != name.strip()
        or len(name) > MAX_NAME_LENGTH
    ):
        raise ValueError(
            f"output_name must be a plain file name stem (no separators); got {name!r}"
        )
    return name


@dataclass(frozen=True)
class OutputFiles:
    """Every file name an acquisition called ``name`` may leave in its folder."""

    name: str

    @property
    def tiff(self) -> str:
        """The finished OME-TIFF."""
        return self.name + TIFF_SUFFIX

    @property
    def partial(self) -> str:
        """The TIFF while it is being written."""
        return self.tiff + PARTIAL_SUFFIX

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
        return (self.tiff, self.partial, self.journal, self.metadata)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.claiming, self.sidecar)
