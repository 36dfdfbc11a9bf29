"""Where each frame of an acquisition goes in a sharded Zarr array (pure arithmetic).

The array's axes are the acquisition's in NGFF order (``t``, ``c``, ``z``, then ``y``,
``x``); RGB samples (``S``) become a ``c`` axis. A chunk holds one band of rows of one
frame (or a tile, when the columns are split too); a shard holds the chunks of a run of
consecutive frames. The shard box grows from the innermost leading axis outwards and
only past axes it covers whole, so the frames of a shard are always a run of
consecutive frame numbers: frames arrive in order and exactly one shard is open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core import FrameLayout, RefusalError, StorageOptions

NGFF_ORDER = "TCZ"
"""NGFF 0.5 orders axes by type: time, then channel, then space."""
CHUNK_BYTES = 1 << 20
"""What a chunk holds by default: whole rows, about 1 MiB."""
SHARD_BYTES = 128 << 20
"""What a shard aims to hold by default."""
MAX_SHARD_CHUNKS = 4096
"""Chunks one shard holds at most (its index, rewritten as frames arrive, stays <= 64 KiB)."""


@dataclass(frozen=True)
class FrameSpot:
    """Where one frame goes: its shard (grid coordinates), its position among the
    shard's frames, and how many frames that shard holds within the array."""

    shard: tuple[int, ...]
    position: int
    shard_frames: int


@dataclass(frozen=True)
class ShardGrid:
    """The chunk and shard geometry of one acquisition."""

    layout: FrameLayout
    chunk_rows: int
    chunk_columns: int
    box: tuple[int, ...]
    """Frames a shard spans along each leading axis."""

    @classmethod
    def create(
        cls, layout: FrameLayout, options: StorageOptions, acquisition: str | None = None
    ) -> ShardGrid:
        check_ngff_axes(layout.axes, acquisition)
        rows, columns = layout.frame_shape[:2]
        chunk_rows, chunk_columns = options.chunk_shape or (_default_rows(layout), columns)
        chunk_rows, chunk_columns = min(chunk_rows, rows), min(chunk_columns, columns)
        chunks = math.ceil(rows / chunk_rows) * math.ceil(columns / chunk_columns)
        frames = options.shard_frames or max(1, SHARD_BYTES // layout.frame_bytes)
        frames = max(1, min(frames, MAX_SHARD_CHUNKS // chunks))
        return cls(layout, chunk_rows, chunk_columns, _shard_box(layout.leading_shape, frames))

    # -- the array -------------------------------------------------------------------
    @property
    def axes(self) -> tuple[str, ...]:
        """The array's axis names, lower case, in NGFF order."""
        letters = self.layout.leading_axes + ("C" if self.samples else "")
        ordered = sorted(letters, key=NGFF_ORDER.index)
        return (*(letter.lower() for letter in ordered), "y", "x")

    @property
    def samples(self) -> int:
        """RGB(A) samples per pixel; 0 for grayscale."""
        return self.layout.frame_shape[2] if len(self.layout.frame_shape) == 3 else 0

    @property
    def samples_axis(self) -> int | None:
        """Where the samples' ``c`` axis is among the array's axes."""
        return self.axes.index("c") if self.samples else None

    def shape(self, frames: int) -> tuple[int, ...]:
        """The array's shape holding ``frames`` (a whole number of steps) frames."""
        rows, columns = self.layout.frame_shape[:2]
        return self._place(self._leading(frames), self.samples, rows, columns)

    def _leading(self, frames: int) -> tuple[int, ...]:
        shape = self.layout.file_shape(frames)
        return tuple(shape[: len(self.layout.leading_shape)])

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        ones = (1,) * len(self.layout.leading_shape)
        return self._place(ones, self.samples, self.chunk_rows, self.chunk_columns)

    @property
    def shard_shape(self) -> tuple[int, ...]:
        rows = self.bands * self.chunk_rows
        columns = self.tiles * self.chunk_columns
        return self._place(self.box, self.samples, rows, columns)

    def _place(
        self, leading: tuple[int, ...], samples: int, rows: int, columns: int
    ) -> tuple[int, ...]:
        """Array coordinates from leading ones, inserting the samples' axis where NGFF wants it."""
        values = list(leading)
        if self.samples_axis is not None:
            values.insert(self.samples_axis, samples)
        return (*values, rows, columns)

    # -- chunks and shards -------------------------------------------------------------
    @property
    def bands(self) -> int:
        return math.ceil(self.layout.frame_shape[0] / self.chunk_rows)

    @property
    def tiles(self) -> int:
        return math.ceil(self.layout.frame_shape[1] / self.chunk_columns)

    @property
    def chunks_per_frame(self) -> int:
        return self.bands * self.tiles

    @property
    def chunks_per_shard(self) -> int:
        return math.prod(self.box) * self.chunks_per_frame

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one chunk before compression (edge chunks are padded to it)."""
        per_pixel = self.layout.dtype.itemsize * max(1, self.samples)
        return self.chunk_rows * self.chunk_columns * per_pixel

    def locate(self, index: int) -> FrameSpot:
        """Where frame ``index`` (in acquisition order) goes."""
        sizes = self.layout.leading_shape
        if not sizes:
            return FrameSpot(self._place((), 0, 0, 0), 0, 1)
        coordinates = []
        rest = index
        for size in reversed(sizes[1:]):
            assert size is not None
            rest, coordinate = divmod(rest, size)
            coordinates.append(coordinate)
        coordinates.append(rest)
        coordinates.reverse()
        shard = tuple(c // k for c, k in zip(coordinates, self.box, strict=True))
        position = 0
        held = 1
        for c, k, size in zip(coordinates, self.box, sizes, strict=True):
            first = (c // k) * k
            position = position * k + (c - first)
            span = k if size is None else min(k, size - first)
            held *= span
        return FrameSpot(self._place(shard, 0, 0, 0), position, held)

    def shard_key(self, shard: tuple[int, ...]) -> str:
        """The shard's file below the array (Zarr v3's default key encoding)."""
        return "/".join(("c", *(str(c) for c in shard)))


def check_ngff_axes(axes: str, acquisition: str | None = None) -> None:
    """Refuse (``bad_format``) axes NGFF 0.5 cannot hold: its axes go time, channel,
    space, with one channel axis at most (RGB samples take it)."""
    leading = axes.split("YX", maxsplit=1)[0]
    if "C" in leading and axes.endswith("S"):
        raise RefusalError(
            "bad_format",
            f"axes {axes!r}: OME-Zarr (NGFF 0.5) holds one channel axis, and the RGB samples "
            "take it; write C as separate acquisitions or use ome-tiff",
            acquisition,
        )
    if list(leading) != sorted(leading, key=NGFF_ORDER.index):
        raise RefusalError(
            "bad_format",
            f"axes {axes!r}: OME-Zarr (NGFF 0.5) needs the axes in the order T, C, Z, Y, X; "
            "reorder them or use ome-tiff",
            acquisition,
        )


def _default_rows(layout: FrameLayout) -> int:
    """Whole rows, about CHUNK_BYTES: a divisor of the frame's rows when one is close
    (no padded edge chunk), else that many rows."""
    rows = layout.frame_shape[0]
    row_bytes = layout.frame_bytes // rows
    target = max(1, min(rows, CHUNK_BYTES // row_bytes))
    divisor = max(d for d in range(1, target + 1) if rows % d == 0)
    return divisor if 2 * divisor >= target else target


def _shard_box(sizes: tuple[int | None, ...], frames: int) -> tuple[int, ...]:
    """Frames a shard spans per leading axis: from the innermost out, each axis whole
    before the next one grows (so a shard's frames are consecutive)."""
    box = [1] * len(sizes)
    room = frames
    for axis in reversed(range(len(sizes))):
        size = sizes[axis]
        span = room if size is None else min(size, room)
        box[axis] = max(1, span)
        if size is None or span < size:
            break
        room //= size
    return tuple(box)
