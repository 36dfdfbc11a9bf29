"""The ``zarr.json`` documents of an OME-Zarr: the array's and the group's NGFF 0.5 attributes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..core import StorageOptions, axis_scales, channel_labels
from ._codecs import codec_documents
from ._grid import ShardGrid

log = logging.getLogger(__name__)

ARRAY_PATH = "0"
"""The full-resolution array, the one dataset of the multiscale."""
DOCUMENT = "zarr.json"
NGFF_VERSION = "0.5"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_UNITS = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}


def array_document(grid: ShardGrid, options: StorageOptions, frames: int) -> dict[str, Any]:
    """The array's metadata, shaped to hold ``frames`` frames (a whole number of steps)."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(grid.shape(frames)),
        "data_type": grid.layout.dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": list(grid.shard_shape)},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(grid.chunk_shape),
                    "codecs": codec_documents(
                        options.compression,
                        options.compression_level,
                        grid.layout.dtype.itemsize,
                    ),
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "start",
                },
            }
        ],
        "dimension_names": list(grid.axes),
        "attributes": {},
    }


def group_document(
    grid: ShardGrid, name: str, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The group's metadata: NGFF 0.5 under ``ome``, every other metadata key beside it."""
    metadata = metadata or {}
    ome: dict[str, Any] = {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": [_axis(axis) for axis in grid.axes],
                "datasets": [
                    {
                        "path": ARRAY_PATH,
                        "coordinateTransformations": [
                            {"type": "scale", "scale": axis_scales(grid.axes, metadata)}
                        ],
                    }
                ],
            }
        ],
    }
    channels = channel_labels(grid.layout, metadata)
    if channels is not None:
        ome["omero"] = {"channels": [{"label": label} for label in channels]}
    kept = {key: value for key, value in metadata.items() if key != "ome"}
    if "ome" in metadata:
        log.warning("%s: metadata key 'ome' is kept in metadata.json only", name)
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {**kept, "ome": ome},
    }


def _axis(axis: str) -> dict[str, str]:
    description = {"name": axis, "type": _AXIS_TYPES[axis]}
    if axis in _UNITS:
        description["unit"] = _UNITS[axis]
    return description


def shard_geometry(document: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """The shard shape and the chunk shape an array's metadata names (KeyError,
    TypeError or IndexError if it is not one this writer made)."""
    shard = list(document["chunk_grid"]["configuration"]["chunk_shape"])
    chunk = list(document["codecs"][0]["configuration"]["chunk_shape"])
    return shard, chunk
