"""How frames map onto the file: axes, dtype, frame shape and leading-axes shape.

Pure arithmetic shared by the writer, the wire codec and recovery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ._errors import FramesinkError
from ._models import check_axes

SUPPORTED_DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")
RGB_SAMPLES = (3, 4)
PAGE_INDEX_BYTES = 256
"""What one page costs in the file beyond its pixels (its IFD, about 250 bytes)."""
MAX_FRAME_BYTES = 1 << 31


class LayoutError(FramesinkError, ValueError):
    """The combination of axes, dtype and shapes cannot be written."""


def check_dtype(dtype: object) -> np.dtype[np.generic]:
    """Return the little-endian numpy dtype for a supported dtype name or dtype."""
    try:
        resolved = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise LayoutError(
            f"dtype must be one of {', '.join(SUPPORTED_DTYPES)}; got {dtype!r}"
        ) from exc
    if resolved.name not in SUPPORTED_DTYPES or resolved.byteorder == ">":
        raise LayoutError(
            f"dtype must be one of {', '.join(SUPPORTED_DTYPES)} (little-endian); got {dtype!r}"
        )
    little_endian: np.dtype[np.generic] = resolved.newbyteorder("<")
    return little_endian


@dataclass(frozen=True)
class FrameLayout:
    """Geometry of one acquisition.

    ``leading_shape`` gives the sizes of the axes before ``YX`` in ``axes`` order; only
    the first may be ``None`` (unbounded). Frames are numbered in C order over them.
    """

    axes: str
    dtype: np.dtype[np.generic]
    frame_shape: tuple[int, ...]
    leading_shape: tuple[int | None, ...]

    @classmethod
    def create(
        cls,
        axes: str,
        dtype: object,
        frame_shape: tuple[int, ...] | list[int],
        shape: tuple[int | None, ...] | list[int | None] | None = None,
    ) -> FrameLayout:
        """Validate and build a layout; raise LayoutError saying what is wrong."""
        try:
            check_axes(axes)
        except ValueError as exc:
            raise LayoutError(str(exc)) from None
        resolved_dtype = check_dtype(dtype)
        frame = tuple(frame_shape)
        expected_ndim = 3 if axes.endswith("S") else 2
        if len(frame) != expected_ndim or not all(isinstance(n, int) and n >= 1 for n in frame):
            raise LayoutError(
                f"frame_shape must be {expected_ndim} positive integers "
                f"({'[Y, X, S]' if expected_ndim == 3 else '[Y, X]'}) for axes {axes!r}; "
                f"got {list(frame)}"
            )
        if expected_ndim == 3 and frame[2] not in RGB_SAMPLES:
            raise LayoutError(f"S (samples per pixel) must be 3 or 4; got {frame[2]}")
        leading = cls._leading_shape(axes, shape)
        layout = cls(axes, resolved_dtype, frame, leading)
        if layout.frame_bytes > MAX_FRAME_BYTES:
            raise LayoutError(f"a frame of {layout.frame_bytes} bytes exceeds {MAX_FRAME_BYTES}")
        return layout

    @staticmethod
    def _leading_shape(
        axes: str, shape: tuple[int | None, ...] | list[int | None] | None
    ) -> tuple[int | None, ...]:
        leading_axes = axes.split("YX", maxsplit=1)[0]
        if shape is None:
            if len(leading_axes) > 1:
                raise LayoutError(
                    f"axes {axes!r} have {len(leading_axes)} leading axes: give 'shape' "
                    f"with their sizes, e.g. [null, 2, 5] for TCZYX"
                )
            return (None,) if leading_axes else ()
        sizes = tuple(shape)
        if len(sizes) != len(leading_axes):
            raise LayoutError(
                f"shape must give {len(leading_axes)} sizes for the leading axes "
                f"{leading_axes!r} of {axes!r}; got {list(sizes)}"
            )
        for position, size in enumerate(sizes):
            if size is None and position == 0:
                continue
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise LayoutError(
                    f"shape sizes must be positive integers (only the first may be null); "
                    f"got {list(sizes)}"
                )
        if math.prod(s for s in sizes if s is not None) > 1 << 40:
            raise LayoutError(f"shape {list(sizes)} is absurdly large")
        return sizes

    @property
    def leading_axes(self) -> str:
        return self.axes.split("YX")[0]

    @cached_property
    def frame_bytes(self) -> int:
        return math.prod(self.frame_shape) * self.dtype.itemsize

    @cached_property
    def page_cost(self) -> int:
        """Bytes one frame adds to the file, pixels and page index."""
        return self.frame_bytes + PAGE_INDEX_BYTES

    @property
    def frames_per_step(self) -> int:
        """Frames in one step of the first leading axis (1 without leading axes)."""
        return math.prod(s for s in self.leading_shape[1:] if s is not None)

    @property
    def capacity(self) -> int | None:
        """Total frames the acquisition can hold, or None when unbounded."""
        if not self.leading_shape:
            return 1
        first = self.leading_shape[0]
        return None if first is None else first * self.frames_per_step

    def as_frames(self, frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """``frames`` as a stack (first axis = frame number); ValueError or TypeError if
        their shape or dtype is not this layout's."""
        chunk = np.asarray(frames)
        if chunk.shape == self.frame_shape:
            chunk = chunk[np.newaxis]
        if chunk.ndim != len(self.frame_shape) + 1 or chunk.shape[1:] != self.frame_shape:
            raise ValueError(
                f"frames must have shape {self.frame_shape} or "
                f"(n, *{self.frame_shape}) for axes {self.axes!r}; got {chunk.shape}"
            )
        if chunk.dtype != self.dtype:
            raise TypeError(f"frames must be {self.dtype.name}; got {chunk.dtype.name}")
        return chunk

    def check_room(self, held: int, count: int) -> None:
        """ValueError if ``count`` more frames after ``held`` exceed the shape."""
        capacity = self.capacity
        if capacity is not None and held + count > capacity:
            raise ValueError(
                f"{count} more frames exceed the shape {list(self.leading_shape)} "
                f"({held} of {capacity} written)"
            )

    def padded_count(self, frames: int) -> int:
        """Frames in the file once padded to a whole step (at least one step)."""
        steps = max(1, math.ceil(frames / self.frames_per_step))
        return steps * self.frames_per_step

    def file_shape(self, frames: int) -> tuple[int, ...]:
        """Shape of the finished file holding ``frames`` (already padded) frames."""
        if not self.leading_shape:
            return self.frame_shape
        steps = frames // self.frames_per_step
        rest = tuple(s for s in self.leading_shape[1:] if s is not None)
        return (steps, *rest, *self.frame_shape)

    def sizes(self, frames: int) -> dict[str, int]:
        """Size of every axis letter of the finished file."""
        return dict(zip(self.axes, self.file_shape(frames), strict=True))
