"""A synthetic camera: a moving test pattern published like a real camera would."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import AcquisitionEntry
from ..transport import PublishedAcquisition, Publisher
from ._progress import ProgressBar


@dataclass
class SyntheticCamera:
    """Frames of a bright disc circling over a gradient; deterministic per index."""

    frame_shape: tuple[int, ...] = (512, 512)
    dtype: str = "uint16"
    frame_rate: float | None = 100.0
    exposure_time: float = 0.01

    def frame(self, index: int) -> np.ndarray[Any, Any]:
        height, width = self.frame_shape[:2]
        info = np.iinfo(self.dtype) if np.dtype(self.dtype).kind in "iu" else None
        top = float(min(info.max, 4095)) if info else 1.0
        rows, cols = np.ogrid[:height, :width]
        angle = 2 * np.pi * index / 100
        centre_row = height / 2 + height / 4 * np.sin(angle)
        centre_col = width / 2 + width / 4 * np.cos(angle)
        radius = max(2.0, min(height, width) / 10)
        disc = ((rows - centre_row) ** 2 + (cols - centre_col) ** 2) <= radius**2
        image = (cols / max(1, width - 1)) * top * 0.25 + disc * top * 0.7
        pixels: np.ndarray[Any, Any] = image.astype(self.dtype)
        if len(self.frame_shape) == 3:
            pixels = np.repeat(pixels[:, :, np.newaxis], self.frame_shape[2], axis=2)
        return pixels

    def run(
        self,
        acquisition: PublishedAcquisition,
        count: int,
        chunk: int = 1,
        progress: ProgressBar | None = None,
    ) -> None:
        """Publish ``count`` frames in chunks, paced at ``frame_rate`` when given."""
        start = time.monotonic()
        for first in range(0, count, chunk):
            indexes = range(first, min(count, first + chunk))
            frames = np.stack([self.frame(i) for i in indexes])
            metadata = [
                {
                    "delta_t": round(i / self.frame_rate, 6) if self.frame_rate else None,
                    "exposure_time": self.exposure_time,
                }
                for i in indexes
            ]
            if self.frame_rate:
                delay = start + indexes[-1] / self.frame_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            acquisition.send(frames, metadata)
            if progress is not None:
                progress.update(len(indexes))


def publish_synthetic(
    publisher: Publisher,
    camera: SyntheticCamera,
    *,
    acquisition: str,
    count: int,
    output_path: str,
    output_name: str,
    chunk: int = 1,
    show_progress: bool = True,
    wait: float | None = None,
    idle_timeout: float | None = None,
    compression: str | None = None,
    compression_level: int | None = None,
    image_format: str | None = None,
) -> AcquisitionEntry | None:
    """Start, publish ``count`` frames and stop one synthetic acquisition.

    With ``wait`` (and a publisher that knows the control endpoint) return the daemon's
    status entry once the files are final.
    """
    axes = "TYXS" if len(camera.frame_shape) == 3 else "TYX"
    handle = publisher.start(
        acquisition,
        {
            "axes": axes,
            "notes": "synthetic camera",
            "camera": "framesink synthetic",
            "time_increment": 1 / camera.frame_rate if camera.frame_rate else None,
        },
        output_path=output_path,
        output_name=output_name,
        dtype=camera.dtype,
        frame_shape=camera.frame_shape,
        idle_timeout=idle_timeout,
        compression=compression,
        compression_level=compression_level,
        format=image_format,
    )
    progress = ProgressBar(count, "camera") if show_progress else None
    camera.run(handle, count, chunk, progress)
    if progress is not None:
        progress.close()
    return handle.stop({"frames_sent": count}, wait=wait)
