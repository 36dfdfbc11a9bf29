"""The OME-TIFF image of one acquisition: a page series, then OME-XML at the end.

While it runs the file is a BigTIFF whose first page carries a placeholder
description; at finalize the series writes its page index and the OME-XML replaces the
placeholder (tifffile's own OME mode cannot append this way, see docs/file-format.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import tifffile

from ..core import FrameLayout, OutputFiles
from ..store import Folder
from ._ome import build_ome_xml

PLACEHOLDER_DESCRIPTION = (
    "framesink: acquisition in progress; if this file was left behind, "
    "run `framesink recover` on its folder"
)


def photometric_of(layout: FrameLayout) -> str:
    """Interleaved RGB(A) pages when the axes end in ``S``, grayscale otherwise."""
    return "rgb" if layout.axes.endswith("S") else "minisblack"


class PageSeries(Protocol):
    """Pages of one TIFF series appended in frame order; ``pages`` counts complete ones.

    The seam between the OME-TIFF image and how its pages are laid out: equal
    uncompressed pages in one block (:class:`~framesink.tiff.ContiguousSeries`) today,
    pages of varying size with journaled offsets beside it.
    """

    pages: int

    @property
    def is_direct(self) -> bool: ...

    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None: ...

    def append_empty(self, count: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...

    def close_quietly(self) -> None: ...


class TiffImage:
    """An :class:`~framesink.store.Image` written as one series of an OME-TIFF."""

    def __init__(
        self, folder: Folder, files: OutputFiles, layout: FrameLayout, series: PageSeries
    ) -> None:
        self.folder = folder
        self.files = files
        self.layout = layout
        self.series = series

    @property
    def frames(self) -> int:
        return self.series.pages

    @property
    def is_direct(self) -> bool:
        return self.series.is_direct

    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None:
        self.series.append(chunks)

    def append_empty(self, count: int) -> None:
        self.series.append_empty(count)

    def sync(self) -> None:
        self.series.sync()

    def close(self) -> None:
        self.series.close()

    def close_quietly(self) -> None:
        self.series.close_quietly()

    def describe(
        self, metadata: Mapping[str, Any], frame_metadata: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        """Put the OME-XML into the first page's ImageDescription."""
        xml = build_ome_xml(self.layout, self.frames, metadata, self.files.name, frame_metadata)
        name = self.files.partial
        with self.folder.open_binary(name, "r+b") as handle:
            tifffile.tiffcomment(tifffile.FileHandle(handle, name=name), xml.encode("utf-8"))
