"""The bookkeeping of a shared-memory ring (pure): what is lent, where the next slot goes.

A ring is one block of memory the publisher owns. It writes each message's pixels into
a slot (aligned, so that the daemon can write them to disk with O_DIRECT as they are),
sends only where the slot is, and reuses the slot once the daemon releases it.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from ._errors import RefusalError

SLOT_ALIGNMENT = 4096
"""Every slot starts on a page: O_DIRECT needs aligned memory."""
RELEASE_RECORD_BYTES = 16
"""A release is two little-endian u64: offset, length."""


def slot_size(length: int) -> int:
    """The bytes a slot of ``length`` takes in the ring (rounded up to the alignment)."""
    return -(-length // SLOT_ALIGNMENT) * SLOT_ALIGNMENT


@dataclass
class RingAllocator:
    """First in, first out slots in a ring of ``size`` bytes (the publisher's side).

    Releases may come in any order; space is reused from the oldest slot on, once it
    and every slot before it are released.
    """

    size: int
    _slots: deque[tuple[int, int]] = field(default_factory=deque)
    _outstanding: set[int] = field(default_factory=set)
    _head: int = 0

    def allocate(self, length: int) -> int | None:
        """The offset of a free slot for ``length`` bytes, or None while the ring is full."""
        need = slot_size(length)
        if need > self.size:
            raise ValueError(f"{length} bytes do not fit a ring of {self.size} bytes")
        offset = self._place(need)
        if offset is not None:
            self._slots.append((offset, need))
            self._outstanding.add(offset)
            self._head = offset + need
        return offset

    def release(self, offset: int) -> None:
        """The daemon is done with the slot at ``offset`` (unknown offsets: ValueError)."""
        if offset not in self._outstanding:
            raise ValueError(f"no slot lent at offset {offset}")
        self._outstanding.remove(offset)
        while self._slots and self._slots[0][0] not in self._outstanding:
            self._slots.popleft()

    @property
    def lent(self) -> int:
        """Slots not yet released."""
        return len(self._outstanding)

    def _place(self, need: int) -> int | None:
        if not self._slots:
            self._head = 0
            return 0
        tail = self._slots[0][0]
        head = self._head
        if head > tail:
            if head + need <= self.size:
                return head
            return 0 if need <= tail else None
        return head if head + need <= tail else None


@dataclass
class LentSlots:
    """The slots a ring has lent the daemon and the daemon has not released yet."""

    size: int
    _starts: list[int] = field(default_factory=list)
    _lengths: dict[int, int] = field(default_factory=dict)

    def take(self, offset: int, length: int, acquisition: str | None = None) -> None:
        """Lend the slot (offset, length); RefusalError ``bad_shm`` (misaligned, outside
        the ring) or ``shm_in_use`` (overlaps a slot not yet released) if it cannot be."""
        if offset % SLOT_ALIGNMENT:
            raise RefusalError(
                "bad_shm", f"offset {offset} is not a multiple of {SLOT_ALIGNMENT}", acquisition
            )
        end = offset + length
        if end > self.size:
            raise RefusalError(
                "bad_shm",
                f"bytes {offset}..{end} lie outside the ring of {self.size} bytes",
                acquisition,
            )
        position = bisect.bisect_right(self._starts, offset)
        for start in self._starts[max(0, position - 1) : position + 1]:
            if start < end and offset < start + self._lengths[start]:
                raise RefusalError(
                    "shm_in_use",
                    f"bytes {offset}..{end} overlap a slot at {start} not yet released",
                    acquisition,
                )
        self._starts.insert(position, offset)
        self._lengths[offset] = length

    def give_back(self, offset: int) -> bool:
        """Forget the slot at ``offset``; False if it was not lent."""
        if self._lengths.pop(offset, None) is None:
            return False
        del self._starts[bisect.bisect_left(self._starts, offset)]
        return True

    @property
    def count(self) -> int:
        return len(self._starts)
