"""The batch API framesink grew from: write a whole acquisition in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core import (
    FinishReason,
    FrameLayout,
    LayoutError,
    MetaData,
    OutputParameters,
    check_output_name,
    metadata_dict,
)
from ..store import AcquisitionWriter
from ._format import OmeTiffFormat


def save_config_frames(config: MetaData, frames: Any, outputparams: OutputParameters) -> None:
    """Write ``frames`` to ``<output_path>/<output_name>.ome.tiff`` and ``metadata.json``.

    ``frames`` has the full shape given by ``config.axes`` (e.g. (T, Y, X) for "TYX").
    An existing file of the same name is overwritten. Everything is checked before any
    file is created.
    """
    array = np.asarray(frames)
    metadata = metadata_dict(config)
    axes = metadata["axes"]
    if array.ndim != len(axes):
        raise ValueError(
            f"frames have {array.ndim} dimensions {array.shape} but axes {axes!r} need {len(axes)}"
        )
    leading = len(axes.split("YX")[0])
    frame_shape = array.shape[leading:]
    shape = list(array.shape[:leading])
    try:
        FrameLayout.create(axes, array.dtype, frame_shape, shape)
    except LayoutError as exc:
        raise ValueError(str(exc)) from None
    name = check_output_name(outputparams.output_name)
    folder = Path(outputparams.output_path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output_path {folder} exists and is not a directory")
    writer = AcquisitionWriter(
        folder,
        name,
        metadata,
        image_format=OmeTiffFormat(),
        dtype=array.dtype,
        frame_shape=frame_shape,
        shape=shape,
        overwrite=True,
        fsync_interval=None,
    )
    try:
        writer.write(array.reshape(-1, *frame_shape))
    except BaseException as exc:
        writer.finalize(FinishReason.ERROR, error=f"{type(exc).__name__}: {exc}")
        raise
    writer.finalize(FinishReason.STOP)
