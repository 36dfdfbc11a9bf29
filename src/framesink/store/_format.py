"""What a storage format provides: the encoding of pixels, nothing else.

Everything format-neutral (the folder, the journal, the sidecar, the ledger,
metadata.json, never overwriting, recovery's bookkeeping) is the store's. A format
plugs in an :class:`ImageFormat`: it creates an :class:`Image` that takes frames in
index order, and reopens what a crash left as an :class:`InterruptedImage` from which
recovery copies every frame that reached the disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..core import Compression, FrameLayout, OutputFiles, StorageOptions
from ._folder import Folder
from ._journal import Journal, JournalState


class Image(Protocol):
    """One acquisition's pixels while they are written, under the partial name.

    ``frames`` counts the frames the image holds (written or zero-filled). A failed
    ``append`` raises OSError after ``frames`` has been set to what did reach it.
    """

    @property
    def frames(self) -> int: ...

    @property
    def is_direct(self) -> bool:
        """True if pixels bypass the page cache."""
        ...

    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None: ...

    def append_empty(self, count: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None:
        """Complete the image's own structure (e.g. a page index) and close it."""
        ...

    def close_quietly(self) -> None:
        """Release the image after a failure, keeping whatever reached it."""
        ...

    def describe(
        self, metadata: Mapping[str, Any], frame_metadata: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        """Embed the acquisition's metadata (``notes`` already left out) in the closed image."""
        ...


class InterruptedImage(Protocol):
    """What a crash left of an image: ``frames`` complete frames recovery may copy."""

    @property
    def frames(self) -> int: ...

    def read(self, first: int, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
        """Fill ``into`` with the bytes of frames from ``first`` on; False if they are gone."""
        ...

    def close(self) -> None: ...


class ImageFormat(Protocol):
    """A storage format: its name on the wire, its image's suffix, its encoder."""

    @property
    def name(self) -> str: ...

    @property
    def suffix(self) -> str: ...

    @property
    def compressions(self) -> frozenset[Compression]:
        """The codecs its images can hold (``none`` among them)."""
        ...

    @property
    def record_aliases(self) -> tuple[str, ...]:
        """Keys of the record's ``files`` that name the image besides ``image``."""
        ...

    def check_layout(self, layout: FrameLayout, acquisition: str | None = None) -> None:
        """Refuse (RefusalError ``bad_format``) a layout the format cannot hold, before
        any file is made."""
        ...

    def create(
        self,
        folder: Folder,
        files: OutputFiles,
        layout: FrameLayout,
        options: StorageOptions,
        journal: Journal,
    ) -> Image:
        """Create the image under ``files.partial`` (it must not exist yet)."""
        ...

    def open_interrupted(
        self, folder: Folder, source: str, state: JournalState
    ) -> InterruptedImage | None:
        """The image ``source`` a crash left (partial or final name); None if unreadable."""
        ...
