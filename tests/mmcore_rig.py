"""A pure-Python microscope for pymmcore-plus (UniMMCore): camera, filter wheel, stages.

The camera's frames are all different (a counter in every pixel plus a gradient), and a
recorder handler keeps what the runner delivered, so files can be compared pixel-exact.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import useq
from pymmcore_plus.experimental.unicore import (
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    UniMMCore,
    XYStageDevice,
)

SENSOR = (24, 20)
PIXEL_SIZE_UM = 0.65
CHANNELS = ("DAPI", "FITC")


class CountingCamera(SimpleCameraDevice):
    def __init__(self) -> None:
        super().__init__()
        self._exposure = 10.0
        self._count = 0

    def sensor_shape(self) -> tuple[int, int]:
        return SENSOR

    def dtype(self) -> Any:
        return np.uint16

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = exposure

    def snap(self, buffer: np.ndarray[Any, Any]) -> Mapping[str, Any]:
        self._count += 1
        gradient = np.arange(buffer.size, dtype=np.uint16).reshape(buffer.shape)
        buffer[:] = gradient + np.uint16(self._count * 7)
        return {}


class FilterWheel(StateDevice):
    def __init__(self) -> None:
        super().__init__(dict(enumerate(CHANNELS)))
        self._state = 0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = position


class Stage(XYStageDevice):
    def __init__(self) -> None:
        super().__init__()
        self._xy = (0.0, 0.0)

    def get_position_um(self) -> tuple[float, float]:
        return self._xy

    def set_position_um(self, x: float, y: float) -> None:
        self._xy = (x, y)

    def home(self) -> None:
        self._xy = (0.0, 0.0)

    def stop(self) -> None:
        return

    def set_origin_x(self) -> None:
        return

    def set_origin_y(self) -> None:
        return


class Focus(StageDevice):
    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0

    def get_position_um(self) -> float:
        return self._z

    def set_position_um(self, val: float) -> None:
        self._z = val

    def home(self) -> None:
        self._z = 0.0

    def stop(self) -> None:
        return

    def set_origin(self) -> None:
        return


def make_core() -> UniMMCore:
    """A core with the camera, the filter wheel as channel group, XY and Z stages."""
    core = UniMMCore()
    for label, device in (
        ("Camera", CountingCamera()),
        ("Wheel", FilterWheel()),
        ("XY", Stage()),
        ("Z", Focus()),
    ):
        core.loadPyDevice(label, device)
        core.initializeDevice(label)
    core.setCameraDevice("Camera")
    core.setXYStageDevice("XY")
    core.setFocusDevice("Z")
    for channel in CHANNELS:
        core.defineConfig("Channel", channel, "Wheel", "Label", channel)
    core.setChannelGroup("Channel")
    core.definePixelSizeConfig("px")
    core.setPixelSizeUm("px", PIXEL_SIZE_UM)
    core.setPixelSizeConfig("px")
    core.setAutoShutter(False)
    return core


class Recorder:
    """An MDA handler beside framesink's: keeps every delivered frame by event index."""

    def __init__(self, cancel_after: int | None = None, core: UniMMCore | None = None) -> None:
        self.frames: dict[tuple[tuple[str, int], ...], np.ndarray[Any, Any]] = {}
        self.cancel_after = cancel_after
        self.core = core
        self._lock = threading.Lock()

    def frameReady(  # noqa: N802 - pymmcore-plus's name
        self, img: np.ndarray[Any, Any], event: useq.MDAEvent, meta: Mapping[str, Any]
    ) -> None:
        with self._lock:
            self.frames[tuple(sorted((str(k), v) for k, v in event.index.items()))] = img.copy()
            if self.cancel_after is not None and len(self.frames) == self.cancel_after:
                assert self.core is not None
                self.core.mda.cancel()

    def at(self, **index: int) -> np.ndarray[Any, Any] | None:
        return self.frames.get(tuple(sorted(index.items())))
