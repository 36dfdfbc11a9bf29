"""An acquisition as napari layers: one image layer per channel, lazy, calibrated.

Needs napari (for dask) but no Qt: the reader and the follower both build on it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..core import axis_scales, channel_labels
from ..formats import open_acquisition
from ..store import Acquisition, NotAnAcquisitionError, acquisition_folder

LayerData = tuple[Any, dict[str, Any], str]
"""What a napari reader returns for one layer: (data, keyword arguments, layer type)."""
UNITS = {"T": "second", "Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
"""As the OME-Zarr axes give them (steps from the metadata, 1 where not given)."""
PATH_KEY = "framesink_path"
"""The layer metadata key naming the acquisition a layer shows."""


@dataclass(frozen=True)
class AcquisitionLayers:
    """How an acquisition's pixels become napari layers."""

    data: da.Array
    """The whole array, one dask chunk per frame (reads only what napari shows)."""
    channel_axis: int | None
    options: dict[str, Any]
    """``add_image`` keyword arguments (name, scale, axis labels, units, metadata)."""

    @classmethod
    def of(cls, acquisition: Acquisition) -> AcquisitionLayers:
        layout = acquisition.layout
        axes = acquisition.axes
        channels = acquisition.array.shape[axes.index("C")] if "C" in layout.leading_axes else 1
        channel_axis = axes.index("C") if channels > 1 else None
        kept = list(axes.removesuffix("S"))
        if channel_axis is not None:
            del kept[channel_axis]
        scales = axis_scales(kept, acquisition.metadata)
        name = acquisition.folder.name
        labels = channel_labels(layout, acquisition.metadata)
        if channel_axis is not None and labels is None:
            labels = [f"C{channel}" for channel in range(channels)]
        options: dict[str, Any] = {
            "name": [f"{name} {label}" for label in labels] if labels else name,
            "scale": scales,
            "axis_labels": kept,
            "units": [UNITS.get(axis, "pixel") for axis in kept],
            "rgb": axes.endswith("S"),
            "metadata": {PATH_KEY: str(acquisition.folder)},
        }
        if channel_axis is not None:
            options["channel_axis"] = channel_axis
        return cls(lazy(acquisition), channel_axis, options)

    def channel(self, index: int) -> da.Array:
        """The data of the ``index``-th channel's layer (all of it without a C axis)."""
        if self.channel_axis is None:
            return self.data
        channel: da.Array = self.data[(slice(None),) * self.channel_axis + (index,)]
        return channel


def lazy(acquisition: Acquisition) -> da.Array:
    """The acquisition's array for dask: one chunk per frame, read under a lock (the
    format's reader keeps one file position). Its files close when napari lets go of
    the array."""
    array = acquisition.array
    if acquisition.source is not None:
        weakref.finalize(array, acquisition.source.close)
    frame_dims = len(acquisition.layout.frame_shape)
    chunks = (1,) * (array.ndim - frame_dims) + array.shape[array.ndim - frame_dims :]
    meta = np.empty((0,) * array.ndim, array.dtype)
    lazy_array: da.Array = da.from_array(  # type: ignore[no-untyped-call]
        array, chunks=chunks, lock=True, asarray=True, meta=meta, name=False
    )
    return lazy_array


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: ``read_layers`` when every path is an acquisition (its folder
    or its image, finished or running), else None (another reader may take it). Decided
    from file names alone: the acquisition is opened once, by ``read_layers``."""
    for each in [path] if isinstance(path, str) else path:
        try:
            acquisition_folder(Path(each))
        except (NotAnAcquisitionError, OSError):
            return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """The layers of the acquisitions at ``path``: lazy, calibrated, one per channel."""
    layers: list[LayerData] = []
    for each in [path] if isinstance(path, str) else path:
        acquisition = open_acquisition(Path(each))
        described = AcquisitionLayers.of(acquisition)
        layers.append((described.data, described.options, "image"))
    return layers
