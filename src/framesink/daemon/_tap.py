"""The latest-frame tap: a small copy of each open acquisition's newest frame, for the
live page.

The writer thread offers each written batch's last frame before its memory is released
(a ring slot may be reused right after); at most a few times a second a decimated copy
is kept (at most THUMBNAIL_SIDE pixels on the long side), so the write path pays a few
microseconds and memory stays bounded by the open acquisitions.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import imagecodecs
import numpy as np

THUMBNAIL_SIDE = 256
TAP_INTERVAL = 0.25
"""Seconds between two copies kept of one acquisition's frames."""
CONTRAST_PERCENTILES = (0.5, 99.5)


class LatestFrame:
    """The newest decimated frame of one acquisition, replaced at most every TAP_INTERVAL."""

    def __init__(self) -> None:
        self._frame: np.ndarray[Any, Any] | None = None
        self._taken = -math.inf
        self._lock = threading.Lock()
        self.version = 0
        """Counts the frames kept (the page reloads a thumbnail when it changes)."""

    def offer(self, frames: np.ndarray[Any, Any]) -> None:
        """Keep a decimated copy of the last of ``frames`` if the last one is old enough."""
        now = time.monotonic()
        if now - self._taken < TAP_INTERVAL or len(frames) == 0:
            return
        frame = frames[-1]
        step = max(1, math.ceil(max(frame.shape[:2]) / THUMBNAIL_SIDE))
        copy = np.array(frame[::step, ::step], copy=True)
        with self._lock:
            self._frame, self._taken = copy, now
            self.version += 1

    def snapshot(self) -> np.ndarray[Any, Any] | None:
        with self._lock:
            return self._frame


def thumbnail_png(frame: np.ndarray[Any, Any]) -> bytes:
    """``frame`` as an 8-bit PNG, its contrast stretched between the 0.5th and 99.5th
    percentiles (RGB(A) frames keep their colours, each scaled alike)."""
    pixels = frame.astype(np.float32)
    low, high = np.percentile(pixels, CONTRAST_PERCENTILES)
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.clip((pixels - low) * scale, 0, 255).astype(np.uint8)
    return bytes(imagecodecs.png_encode(np.ascontiguousarray(scaled)))
