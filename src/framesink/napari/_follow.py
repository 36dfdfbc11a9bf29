"""Following a running acquisition in napari: its layers grow as frames arrive.

The follower reopens the acquisition on a Qt timer (napari's event loop), hands its
layers the new frames and, when asked, moves the viewer to the newest one. It stops by
itself once the acquisition is final (after showing its last frames) or its layers
have left the viewer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..core import FramesinkError
from ..formats import open_acquisition
from ..store import Acquisition
from ._layers import AcquisitionLayers

log = logging.getLogger(__name__)

FAILURES_BEFORE_STOP = 10
"""Consecutive refreshes that fail (the folder gone, say) before the follower gives up."""
_FOLLOWING: set[AcquisitionFollower] = set()
"""Followers whose timer runs (Qt holds no Python reference to them)."""


class AcquisitionFollower:
    """One acquisition's layers in a viewer, kept current by :meth:`refresh`."""

    def __init__(self, viewer: Any, path: str | Path, *, newest: bool = True) -> None:
        self.viewer = viewer
        self.path = Path(path)
        self.newest = newest
        self.failures = 0
        self._acquisition = open_acquisition(self.path)
        self._timer: QTimer | None = None
        self._described = AcquisitionLayers.of(self._acquisition)
        added = viewer.add_image(self._described.data, **self._described.options)
        self.layers: list[Any] = added if isinstance(added, list) else [added]
        self._show_newest()

    @property
    def acquisition(self) -> Acquisition:
        """The acquisition as last opened."""
        return self._acquisition

    @property
    def following(self) -> bool:
        return self._timer is not None

    def refresh(self) -> bool:
        """Open the acquisition again and give the layers what changed; True while it
        is still being written (and its layers are still shown)."""
        if any(layer not in self.viewer.layers for layer in self.layers):
            return False
        fresh = open_acquisition(self.path)
        if _progress(fresh) == _progress(self._acquisition):
            fresh.close()
            return fresh.running
        self._described = AcquisitionLayers.of(fresh)
        for index, layer in enumerate(self.layers):
            layer.data = self._described.channel(index)
        self._acquisition = fresh
        self._show_newest()
        return fresh.running

    def start(self, interval: float = 1.0) -> None:
        """Refresh every ``interval`` seconds on the Qt event loop until done."""
        if self._timer is None:
            self._timer = QTimer()
            self._timer.setInterval(max(50, round(interval * 1000)))
            self._timer.timeout.connect(self._tick)
            _FOLLOWING.add(self)
            self._timer.start()

    def stop(self) -> None:
        """Stop refreshing; the layers stay as they are."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        _FOLLOWING.discard(self)

    def _tick(self) -> None:
        try:
            running = self.refresh()
        except (FramesinkError, OSError, ValueError) as exc:
            self.failures += 1
            log.warning("%s: could not refresh (%d): %s", self.path, self.failures, exc)
            if self.failures >= FAILURES_BEFORE_STOP:
                self.stop()
            return
        self.failures = 0
        if not running:
            self.stop()

    def _show_newest(self) -> None:
        """Move the viewer's sliders to the newest frame on disk."""
        acquisition = self._acquisition
        frames = acquisition.array.frames_readable
        leading = acquisition.array.shape[: len(acquisition.layout.leading_shape)]
        if not self.newest or frames == 0 or not leading:
            return
        position = list(np.unravel_index(frames - 1, leading))
        if self._described.channel_axis is not None:
            del position[self._described.channel_axis]
        layer = self.layers[0]
        offset = self.viewer.dims.ndim - layer.ndim
        for axis, index in enumerate(position):
            self.viewer.dims.set_point(offset + axis, float(index) * layer.scale[axis])


def _progress(acquisition: Acquisition) -> tuple[Any, ...]:
    """What a refresh compares: frames on disk, gaps, shape and whether it is final."""
    return (
        acquisition.array.frames_readable,
        acquisition.array.shape,
        tuple(map(tuple, acquisition.missing_ranges)),
        acquisition.running,
    )


def follow(
    viewer: Any, path: str | Path, *, interval: float = 1.0, newest: bool = True
) -> AcquisitionFollower:
    """Show the acquisition at ``path`` in ``viewer`` and keep it current while it runs
    (every ``interval`` seconds; ``newest``: keep the sliders on the newest frame)."""
    follower = AcquisitionFollower(viewer, path, newest=newest)
    if follower.acquisition.running:
        follower.start(interval)
    return follower
