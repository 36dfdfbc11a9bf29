"""The page index (IFD chain) of a contiguous series, appended in bounded memory.

tifffile assembles every remaining IFD of a contiguous series in memory at close
(about 200 bytes a page: 2 GB for ten million small frames). Here tifffile writes only
the IFD of page 1; it is the template for pages 2 … N-1, which are appended in chunks
with their data offsets and chain pointers patched, exactly as tifffile lays them out.
The last step links page 1 to page 2, so a reader sees either two pages or all of them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..core import FramesinkError
from ..store import write_fully

CHUNK_PAGES = 8192
"""IFDs built per write (a few MB at most)."""

_BIGTIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_BIGTIFF_TYPE_SIZES |= {13: 4, 16: 8, 17: 8, 18: 8}
_DATA_OFFSET_TAGS = (273, 324)  # StripOffsets, TileOffsets
_ENTRY_BYTES = 20


class TemplateError(FramesinkError, ValueError):
    """Page 1's IFD is not of the form this module can replicate."""


@dataclass(frozen=True)
class _Field:
    """An 8-byte offset at ``position`` of the IFD: ``base`` on page 1, ``per_page`` more
    on each later page (``base`` None: the template's own value)."""

    position: int
    per_page: int
    base: int | None = None


@dataclass(frozen=True)
class IfdTemplate:
    """Page 1's IFD as bytes, and the offsets in it that differ from page to page."""

    offset: int
    raw: bytes
    next_pointer: int
    fields: tuple[_Field, ...]

    @classmethod
    def read(cls, fd: int, offset: int, size: int, frame_bytes: int) -> IfdTemplate:
        """Parse the IFD at ``offset`` (it and its values fill ``size`` bytes)."""
        raw = os.pread(fd, size, offset)
        if len(raw) != size or size < 16:
            raise TemplateError("page 1's IFD is shorter than expected")
        (count,) = struct.unpack_from("<Q", raw, 0)
        next_pointer = 8 + count * _ENTRY_BYTES
        if next_pointer + 8 > size:
            raise TemplateError("page 1's IFD does not fit its bytes")
        fields: list[_Field] = [_Field(next_pointer, size, base=offset + size)]
        for index in range(count):
            fields += _entry_fields(raw, offset, size, 8 + index * _ENTRY_BYTES, frame_bytes)
        return cls(offset, raw, next_pointer, tuple(fields))

    def pages(self, first: int, count: int, last_page: int) -> bytes:
        """IFDs of pages ``first`` … ``first + count - 1`` (page 1 is the template)."""
        block = np.tile(np.frombuffer(self.raw, np.uint8), (count, 1))
        steps = np.arange(first - 1, first - 1 + count, dtype=np.uint64)
        for item in self.fields:
            base = item.base
            if base is None:
                (base,) = struct.unpack_from("<Q", self.raw, item.position)
            values = np.uint64(base) + steps * np.uint64(item.per_page)
            block[:, item.position : item.position + 8] = (
                values.astype("<u8").view(np.uint8).reshape(count, 8)
            )
        if first + count - 1 == last_page:
            block[-1, self.next_pointer : self.next_pointer + 8] = 0
        return block.tobytes()


def _entry_fields(raw: bytes, offset: int, size: int, entry: int, frame_bytes: int) -> list[_Field]:
    code, kind, count = struct.unpack_from("<HHQ", raw, entry)
    if kind not in _BIGTIFF_TYPE_SIZES:
        raise TemplateError(f"tag {code} has unknown type {kind}")
    value_bytes = count * _BIGTIFF_TYPE_SIZES[kind]
    value_at = entry + 12
    is_offset_tag = code in _DATA_OFFSET_TAGS
    if is_offset_tag and kind != 16:
        raise TemplateError(f"tag {code} is not LONG8")
    if value_bytes <= 8:
        return [_Field(value_at, frame_bytes)] if is_offset_tag and count == 1 else []
    (pointer,) = struct.unpack_from("<Q", raw, value_at)
    start = pointer - offset
    if not 0 <= start <= size - value_bytes:
        raise TemplateError(f"tag {code}'s values lie outside page 1's IFD")
    fields = [_Field(value_at, size)]
    if is_offset_tag:
        fields += [_Field(start + 8 * item, frame_bytes) for item in range(count)]
    return fields


def append_page_index(fd: int, pages: int, frame_bytes: int) -> None:
    """Give a file that tifffile closed with two pages the IFDs of all ``pages``.

    ``fd`` is open for reading and writing; the IFDs go after the end of the file.
    """
    if pages <= 2:
        return
    header = os.pread(fd, 16, 0)
    if header[:4] != b"II+\x00":
        raise TemplateError("not a little-endian BigTIFF")
    (first_ifd,) = struct.unpack_from("<Q", header, 8)
    (tags,) = struct.unpack("<Q", os.pread(fd, 8, first_ifd))
    link = first_ifd + 8 + tags * _ENTRY_BYTES
    (page_one,) = struct.unpack("<Q", os.pread(fd, 8, link))
    end = os.fstat(fd).st_size
    template = IfdTemplate.read(fd, page_one, end - page_one, frame_bytes)
    _append_ifds(fd, template, pages, end)
    _link(fd, template, end)


def _append_ifds(fd: int, template: IfdTemplate, pages: int, position: int) -> None:
    """Write the IFDs of pages 2 … ``pages - 1`` from ``position``, a chunk at a time."""
    for first in range(2, pages, CHUNK_PAGES):
        count = min(CHUNK_PAGES, pages - first)
        write_fully(fd, position, _relocated(template, first, count, pages - 1, position))
        position += count * len(template.raw)


def _link(fd: int, template: IfdTemplate, page_two: int) -> None:
    """Point page 1 at page 2: from here on readers see every page."""
    write_fully(fd, template.offset + template.next_pointer, struct.pack("<Q", page_two))


def _relocated(template: IfdTemplate, first: int, count: int, last: int, at: int) -> bytes:
    """The IFDs of pages ``first`` … as laid out from file offset ``at``."""
    expected = template.offset + (first - 1) * len(template.raw)
    if expected != at:
        raise TemplateError("the page index is not contiguous after page 1")
    return template.pages(first, count, last)
