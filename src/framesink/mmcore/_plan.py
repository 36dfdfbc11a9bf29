"""From a useq MDA sequence to framesink acquisitions: one per stage position (and grid
point), axes in the sequence's order over t, c, z, frames placed by event index."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import useq

from ..core import FramesinkError

LEADING_AXES = "tcz"
PositionKey = tuple[int, int]
"""(position index p, grid index g) of an event."""


class UnsupportedSequenceError(FramesinkError, ValueError):
    """The sequence uses something framesink cannot lay out as files (the message says what)."""


@dataclass(frozen=True)
class PositionPlan:
    """One acquisition: where it goes and what it is called."""

    key: PositionKey
    stem: str
    output_path: str
    position: dict[str, Any]


@dataclass(frozen=True)
class SequencePlan:
    """The geometry every acquisition of the sequence shares, and its positions."""

    leading: tuple[str, ...]
    shape: tuple[int, ...]
    positions: tuple[PositionPlan, ...]

    @property
    def axes(self) -> str:
        return "".join(axis.upper() for axis in self.leading) + "YX"

    def frame_index(self, index: Mapping[str, int]) -> int:
        """The frame number of an event (C order over the leading axes)."""
        number = 0
        for axis, size in zip(self.leading, self.shape, strict=True):
            number = number * size + int(index.get(axis, 0))
        return number


def plan_sequence(sequence: useq.MDASequence, output_path: str, output_name: str) -> SequencePlan:
    if type(sequence).__name__ == "GeneratorMDASequence":
        raise UnsupportedSequenceError(
            "framesink needs a useq.MDASequence: a list or generator of events gives no "
            "axes or sizes to lay the frames out by (run the sequence itself)"
        )
    sizes = {str(axis): size for axis, size in sequence.sizes.items()}
    order = [str(axis) for axis in sequence.axis_order]
    leading = tuple(axis for axis in order if axis in LEADING_AXES and sizes.get(axis, 0) > 0)
    shape = tuple(sizes[axis] for axis in leading)
    keys = _position_keys(sequence)
    positions = tuple(
        _position_plan(sequence, key, len(keys), output_path, output_name) for key in keys
    )
    return SequencePlan(leading, shape, positions)


def _position_keys(sequence: useq.MDASequence) -> list[PositionKey]:
    stage_positions: list[Any] = list(sequence.stage_positions) or [None]
    top_grid = len(list(sequence.grid_plan)) if sequence.grid_plan is not None else 1
    keys = []
    for p, position in enumerate(stage_positions):
        grid = top_grid
        sub = getattr(position, "sequence", None)
        if sub is not None:
            if set(sub.used_axes) - {"g"}:
                raise UnsupportedSequenceError(
                    f"stage position {p} has its own {''.join(sub.used_axes)} plan; framesink "
                    "supports per-position grid plans only (the same t, c, z everywhere)"
                )
            if sub.grid_plan is not None:
                grid = len(list(sub.grid_plan))
        keys += [(p, g) for g in range(grid)]
    return keys


def _position_plan(
    sequence: useq.MDASequence, key: PositionKey, count: int, output_path: str, output_name: str
) -> PositionPlan:
    p, g = key
    stage_positions = list(sequence.stage_positions)
    position = stage_positions[p] if stage_positions else None
    name = getattr(position, "name", None)
    described: dict[str, Any] = {"index": p, "grid_index": g, "name": name}
    if position is not None:
        described |= {"x": position.x, "y": position.y, "z": position.z}
    if count == 1:
        return PositionPlan(key, output_name, output_path, described)
    stem = f"{output_name}_p{p:03d}"
    if name:
        stem += "_" + _safe(name)
    if _has_grid(sequence, position):
        stem += f"_g{g:03d}"
    return PositionPlan(key, stem, f"{output_path}/{stem}", described)


def _has_grid(sequence: useq.MDASequence, position: Any) -> bool:
    sub = getattr(position, "sequence", None)
    return sequence.grid_plan is not None or (sub is not None and sub.grid_plan is not None)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "position"


def acquisition_metadata(
    sequence: useq.MDASequence,
    plan: SequencePlan,
    position: PositionPlan,
    summary: Mapping[str, Any],
    core_state: Mapping[str, Any],
) -> dict[str, Any]:
    """metadata.json (and the OME fields) of one position's acquisition."""
    metadata: dict[str, Any] = {"axes": plan.axes, "position": position.position}
    if "c" in plan.leading:
        metadata["channel_names"] = [channel.config for channel in sequence.channels]
    pixel_size = core_state.get("pixel_size_um")
    if isinstance(pixel_size, int | float) and pixel_size > 0:
        metadata["physical_size_x"] = metadata["physical_size_y"] = pixel_size
    if "z" in plan.leading and sequence.z_plan is not None:
        step = getattr(sequence.z_plan, "step", None)
        if step:
            metadata["physical_size_z"] = abs(float(step))
    interval = getattr(sequence.time_plan, "interval", None)
    if "t" in plan.leading and interval is not None and interval.total_seconds() > 0:
        metadata["time_increment"] = interval.total_seconds()
    metadata["useq_sequence"] = sequence.model_dump(mode="json", exclude_unset=True)
    metadata["mmcore"] = jsonable(
        {
            **core_state,
            "devices": summary.get("devices"),
            "system_info": summary.get("system_info"),
            "config_groups": summary.get("config_groups"),
            "datetime": summary.get("datetime"),
        }
    )
    return metadata


def plane_metadata(event: useq.MDAEvent, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Per-frame metadata: OME Plane fields, and what the sidecar keeps besides."""
    plane: dict[str, Any] = {"mda_index": {str(k): int(v) for k, v in event.index.items()}}
    if event.channel is not None:
        plane["channel"] = event.channel.config
    runner_ms = meta.get("runner_time_ms")
    if isinstance(runner_ms, int | float):
        plane["delta_t"] = runner_ms / 1000
    exposure_ms = meta.get("exposure_ms", event.exposure)
    if isinstance(exposure_ms, int | float):
        plane["exposure_time"] = exposure_ms / 1000
    position = meta.get("position")
    stage = position if isinstance(position, Mapping) else {}
    for axis, fallback in (("x", event.x_pos), ("y", event.y_pos), ("z", event.z_pos)):
        value = stage.get(axis, fallback)
        if isinstance(value, int | float):
            plane[f"position_{axis}"] = float(value)
    return plane


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples, models and other objects as text)."""
    return json.loads(json.dumps(value, default=_fallback))


def _fallback(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Sequence):
        return list(value)
    return str(value)
