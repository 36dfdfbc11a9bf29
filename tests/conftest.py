"""Shared fixtures and readers used across the test suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile


def pattern(
    count: int, frame_shape: tuple[int, ...], dtype: str, start: int = 0
) -> np.ndarray[Any, Any]:
    """Deterministic frames whose pixels depend on the frame index (pixel-exact checks)."""
    frames = np.empty((count, *frame_shape), dtype=dtype)
    grid = np.indices(frame_shape).sum(axis=0)
    for offset in range(count):
        frames[offset] = ((grid + 7 * (start + offset)) % 120).astype(dtype)
    return frames


def read_tiff(path: Path) -> tuple[str, np.ndarray[Any, Any], str]:
    """Return (series kind, pixels, OME-XML) of a finished file."""
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        assert len(tiff.series) == 1, f"{path} has {len(tiff.series)} series"
        return series.kind, series.asarray(), tiff.pages[0].description  # type: ignore[union-attr]


def validate_ome(xml: str) -> Any:
    """Parse and validate OME-XML against the 2016-06 schema; return the OME object."""
    from ome_types import from_xml

    return from_xml(xml, validate=True)


def read_metadata(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "metadata.json").read_text())
    return document


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root
