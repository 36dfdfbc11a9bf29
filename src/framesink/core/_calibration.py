"""An acquisition's calibration as its metadata gives it: the step of each axis and the
names of its channels. Formats and viewers read it the same way (docs/file-format.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ._layout import FrameLayout

SCALE_KEYS = {
    "T": "time_increment",
    "Z": "physical_size_z",
    "Y": "physical_size_y",
    "X": "physical_size_x",
}
"""The metadata key giving each axis's step (seconds for T, micrometres otherwise)."""
CHANNEL_NAMES_KEY = "channel_names"


def axis_scales(axes: Iterable[str], metadata: Mapping[str, Any]) -> list[float]:
    """The step of each axis (letters in either case): the metadata's value where it is a
    positive finite number, else 1."""
    scales = []
    for axis in axes:
        value = metadata.get(SCALE_KEYS.get(axis.upper(), ""))
        if isinstance(value, bool) or not isinstance(value, int | float):
            value = 1.0
        scales.append(float(value) if math.isfinite(value) and value > 0 else 1.0)
    return scales


def channel_labels(layout: FrameLayout, metadata: Mapping[str, Any]) -> list[str] | None:
    """The ``channel_names`` when they name every channel of the C axis, else None."""
    names = metadata.get(CHANNEL_NAMES_KEY)
    leading = layout.leading_axes
    if "C" not in leading or not isinstance(names, list):
        return None
    size = layout.leading_shape[leading.index("C")]
    return [str(name) for name in names] if len(names) == size else None
