"""Reading an acquisition back, finished or still being written, whatever its format.

A finished acquisition is described by its metadata.json; a running (or interrupted)
one by its journal, whose count of frames says how many the image holds whole. Either
way the format opens the image (:meth:`ImageFormat.open_interrupted`, which reads
exactly what is on disk) and :class:`FrameArray` reads frames from it only when
indexed. A running acquisition is read as it was when opened: open it again to see
more.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from ..core import (
    JOURNAL_FILE,
    METADATA_FILE,
    PARTIAL_SUFFIX,
    RESERVED_METADATA_KEY,
    AcquisitionRecord,
    FrameLayout,
    FramesinkError,
)
from ._folder import Folder
from ._format import InterruptedImage
from ._journal import JournalHeader, JournalState, read_journal
from ._recovery import FormatLookup

DEFAULT_FORMAT = "ome-tiff"
"""What a record without ``format`` (written before formats existed) holds."""


class NotAnAcquisitionError(FramesinkError, ValueError):
    """A path that is neither an acquisition's folder nor its image."""


class FrameArray:
    """An acquisition's pixels as a lazy array: ``shape``, ``dtype``, and indexing that
    reads only the frames it needs. Its axes are the acquisition's (``axes``), in its
    order, whatever the format stores: frames never written read as 0."""

    def __init__(
        self,
        image: InterruptedImage | None,
        layout: FrameLayout,
        frames: int,
        missing_ranges: list[list[int]],
    ) -> None:
        self._image = image
        self.layout = layout
        self.dtype = layout.dtype
        self.shape = layout.file_shape(layout.padded_count(frames))
        self._frames = math.prod(self.shape[: len(layout.leading_shape)])
        self._readable = 0 if image is None else image.frames
        self._missing = [range(first, last + 1) for first, last in missing_ranges]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def frames_readable(self) -> int:
        """How many frames, from the first, the image held when opened (gaps read as 0)."""
        return self._readable

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        pixels = self[...]
        return pixels if dtype is None else pixels.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray[Any, Any]:
        keys = _expand(key if isinstance(key, tuple) else (key,), self.ndim)
        leading = len(self.layout.leading_shape)
        grid = np.arange(self._frames).reshape(self.shape[:leading])[tuple(keys[:leading])]
        grid = np.asarray(grid)
        pixels = np.zeros((*grid.shape, *self.layout.frame_shape), self.dtype)
        for position, index in np.ndenumerate(grid):
            self._read(int(index), pixels[position])
        return pixels[(slice(None),) * grid.ndim + tuple(keys[leading:])]

    def _read(self, index: int, into: np.ndarray[Any, Any]) -> None:
        if self._image is None or index >= self._readable:
            return
        if any(index in gap for gap in self._missing):
            return
        if not self._image.read(index, into.reshape(-1).view(np.uint8)):
            raise FramesinkError(f"frame {index} could not be read")

    def __repr__(self) -> str:
        return f"FrameArray(shape={self.shape}, dtype={self.dtype.name})"


def _expand(keys: tuple[Any, ...], ndim: int) -> list[Any]:
    """``keys`` with its Ellipsis (or a missing tail) spelled out as whole axes."""
    if any(key is Ellipsis for key in keys):
        at = next(position for position, key in enumerate(keys) if key is Ellipsis)
        fill = ndim - (len(keys) - 1)
        return [*keys[:at], *[slice(None)] * fill, *keys[at + 1 :]]
    return [*keys, *[slice(None)] * (ndim - len(keys))]


@dataclass(kw_only=True)
class Acquisition:
    """One acquisition read back: ``array`` (lazy), ``axes``, ``metadata``, ``record``
    (None while it runs) and ``missing_ranges``. Close it (or use ``with``)."""

    folder: Path
    image: Path
    format: str
    layout: FrameLayout
    array: FrameArray
    metadata: dict[str, Any]
    record: AcquisitionRecord | None
    missing_ranges: list[list[int]]
    frames_written: int
    source: InterruptedImage | None

    @property
    def axes(self) -> str:
        return self.layout.axes

    @property
    def running(self) -> bool:
        """True while no metadata.json says the acquisition is final."""
        return self.record is None

    def summary(self) -> dict[str, Any]:
        """What ``framesink read`` prints."""
        return {
            "folder": str(self.folder),
            "image": str(self.image),
            "format": self.format,
            "state": "running" if self.running else "finished",
            "axes": self.axes,
            "shape": list(self.array.shape),
            "dtype": self.array.dtype.name,
            "frames_written": self.frames_written,
            "missing_ranges": self.missing_ranges,
            "complete": None if self.record is None else self.record.complete,
        }

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_acquisition(path: str | Path, formats: FormatLookup) -> Acquisition:
    """The acquisition at ``path`` (its folder, or its image), finished or running."""
    folder = acquisition_folder(Path(path))
    with Folder.at(folder, create=False) as handle:
        if handle.is_file(METADATA_FILE):
            return _finished(handle, formats)
        if handle.is_file(JOURNAL_FILE):
            return _running(handle, formats)
    raise NotAnAcquisitionError(f"{path}: no {METADATA_FILE} or journal: not an acquisition")


def acquisition_folder(path: Path) -> Path:
    """The folder of the acquisition at ``path`` (its folder or its image), found from the
    names beside it alone: NotAnAcquisitionError names a path that is not one."""
    if not path.exists():
        raise NotAnAcquisitionError(f"{path} does not exist")
    if path.is_dir() and any((path / name).is_file() for name in (METADATA_FILE, JOURNAL_FILE)):
        return path
    if any((path.parent / name).is_file() for name in (METADATA_FILE, JOURNAL_FILE)):
        return path.parent
    raise NotAnAcquisitionError(
        f"{path} is neither an acquisition's folder nor its image "
        f"(no {METADATA_FILE} or journal beside it)"
    )


def _finished(folder: Folder, formats: FormatLookup) -> Acquisition:
    with folder.open_text(METADATA_FILE) as handle:
        document = json.load(handle)
    record = AcquisitionRecord.model_validate(document.pop(RESERVED_METADATA_KEY))
    leading = len(record.declared_shape)
    frames = math.prod(record.shape[:leading]) if leading else 1
    image = record.files.image
    header = JournalHeader(
        acquisition=record.acquisition,
        format=record.format or DEFAULT_FORMAT,
        options={"compression": record.compression.value},
        name=image,
        image=image,
        partial=image + PARTIAL_SUFFIX,
        sidecar=record.files.sidecar or "",
        axes=record.axes,
        dtype=record.dtype,
        frame_shape=record.shape[leading:],
        shape=list(record.declared_shape),
        metadata=document,
        started=record.started,
        version=record.version,
    )
    state = JournalState(
        header=header, frames=frames, synced=frames, missing_ranges=record.missing_ranges
    )
    return _open(folder, formats, _OnDisk(state, image, document, record, record.frames_written))


def _running(folder: Folder, formats: FormatLookup) -> Acquisition:
    with folder.open_binary(JOURNAL_FILE) as handle:
        state = read_journal(handle, folder.path / JOURNAL_FILE)
    header = state.header
    source = header.partial if folder.exists(header.partial) else header.image
    written = (state.frames or 0) - sum(last - first + 1 for first, last in state.missing_ranges)
    return _open(folder, formats, _OnDisk(state, source, dict(header.metadata), None, written))


@dataclass(frozen=True)
class _OnDisk:
    """What metadata.json or the journal says about an acquisition's image."""

    state: JournalState
    source: str
    metadata: dict[str, Any]
    record: AcquisitionRecord | None
    frames_written: int


def _open(folder: Folder, formats: FormatLookup, described: _OnDisk) -> Acquisition:
    state, source = described.state, described.source
    header = state.header
    try:
        image_format = formats(header.format)
    except KeyError:
        raise NotAnAcquisitionError(
            f"{folder.path}: format {header.format!r} is not installed"
        ) from None
    layout = FrameLayout.create(header.axes, header.dtype, header.frame_shape, header.shape)
    image = image_format.open_interrupted(folder, source, state) if folder.exists(source) else None
    missing = [list(gap) for gap in state.missing_ranges]
    return Acquisition(
        folder=folder.path,
        image=folder.path / source,
        format=header.format,
        layout=layout,
        array=FrameArray(image, layout, state.frames or 0, missing),
        metadata=dict(described.metadata),
        record=described.record,
        missing_ranges=missing,
        frames_written=max(0, described.frames_written),
        source=image,
    )
