"""Public models of the batch API: acquisition metadata and output location."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

AXES_PATTERN = re.compile(r"^(?!.*(.).*\1)[TCZ]{0,3}YXS?$")
AXES_HELP = (
    "axes must be up to three of T, C, Z (each at most once, in any order), then 'YX', "
    "then optionally 'S' for RGB samples, e.g. 'TYX', 'TCZYX', 'ZTYX', 'TYXS'"
)
RESERVED_METADATA_KEY = "framesink"


def check_axes(axes: str) -> str:
    """Return ``axes`` if it is a layout framesink can write, else raise ValueError."""
    if not isinstance(axes, str) or not AXES_PATTERN.match(axes):
        raise ValueError(f"{AXES_HELP}; got {axes!r}")
    return axes


class MetaData(BaseModel):
    """Acquisition metadata: ``axes`` plus any keys the instrument wants kept.

    Extra keys are allowed and preserved in order. Everything except ``notes`` is
    embedded in the OME-TIFF; everything is written to ``metadata.json``.
    """

    model_config = ConfigDict(extra="allow")

    axes: str
    notes: Any = None

    @field_validator("axes")
    @classmethod
    def _axes_are_supported(cls, value: str) -> str:
        return check_axes(value)


class OutputParameters(BaseModel):
    """Where a batch write goes: ``<output_path>/<output_name>.ome.tiff``."""

    output_path: str | Path
    output_name: str


def metadata_dict(metadata: MetaData | Mapping[str, Any]) -> dict[str, Any]:
    """Validate metadata and return its dump; the reserved key is refused."""
    model = metadata if isinstance(metadata, MetaData) else MetaData.model_validate(metadata)
    dump = model.model_dump(mode="json")
    if RESERVED_METADATA_KEY in dump:
        raise ValueError(f"metadata key {RESERVED_METADATA_KEY!r} is reserved for framesink")
    return dump
