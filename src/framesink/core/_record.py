"""The acquisition record kept under the reserved ``framesink`` key of metadata.json."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ._compression import Compression
from ._models import RESERVED_METADATA_KEY
from ._names import METADATA_FILE

EARLIER_IMAGE_KEY = "tiff"
"""The key of ``files`` that named the image before there was more than one format."""


class FinishReason(StrEnum):
    """Why an acquisition ended."""

    STOP = "stop"
    ABORT = "abort"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    ERROR = "error"
    RECOVERED = "recovered"


class AcquisitionFiles(BaseModel):
    """Names (relative to the acquisition folder) of the files an acquisition produced.

    ``image`` names the image of any format (a file or a folder); ``tiff`` is kept for
    readers of earlier records and names the same file when the format is OME-TIFF.
    """

    tiff: str | None = None
    image: str
    sidecar: str | None
    metadata: str = METADATA_FILE

    @model_validator(mode="before")
    @classmethod
    def _image_of_an_earlier_record(cls, data: Any) -> Any:
        if isinstance(data, dict) and "image" not in data and data.get(EARLIER_IMAGE_KEY):
            return {**data, "image": data[EARLIER_IMAGE_KEY]}
        return data


class FrameCounts(BaseModel):
    """What became of an acquisition's frames so far: the one definition of its counters.

    The ledger produces it; the sink's progress carries it; the record, the status entry
    and the journal report the same fields (the record and the entry keep them flat, in
    their documented key order, and a unit test holds them to this model).
    """

    model_config = ConfigDict(frozen=True)

    frames_written: int = 0
    """Frames received and stored."""
    frames_missing: int = 0
    """Frames never received; the image holds zeros there (``missing_ranges``)."""
    frames_dropped: int = 0
    """Frames received but not stored: past the declared shape, or duplicates."""
    messages_lost: int = 0
    """Messages a SUB socket's overload lost, whose frames could not be placed."""
    bytes_written: int = 0
    """Pixel bytes received and stored (zero-filled frames not counted)."""


class AcquisitionRecord(BaseModel):
    """What happened to one acquisition; stored in metadata.json under ``framesink``."""

    model_config = ConfigDict(extra="allow")

    acquisition: str
    files: AcquisitionFiles
    format: str | None = None
    """The storage format's name (None in records written before formats were named:
    those are all OME-TIFF)."""
    compression: Compression = Compression.NONE
    compression_level: int | None = None
    dtype: str
    axes: str
    shape: list[int]
    declared_shape: list[int | None]
    frames_written: int
    frames_missing: int
    missing_ranges: list[list[int]]
    frames_dropped: int
    messages_lost: int = 0
    bytes_written: int
    started: str
    stopped: str
    complete: bool
    reason: FinishReason
    error: str | None
    version: str


def utc_now() -> str:
    """Current time as UTC ISO 8601 with an explicit offset."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def metadata_document(metadata: Mapping[str, Any], record: AcquisitionRecord) -> dict[str, Any]:
    """metadata.json content: the MetaData dump at top level plus the record."""
    document = {key: value for key, value in metadata.items() if key != RESERVED_METADATA_KEY}
    document[RESERVED_METADATA_KEY] = record.model_dump(mode="json")
    return document
