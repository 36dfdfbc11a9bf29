"""The ring's bookkeeping: slots are never lent twice, space comes back in any order."""

from __future__ import annotations

import random

import pytest

from framesink.core import SLOT_ALIGNMENT, LentSlots, RefusalError, RingAllocator
from framesink.core._ring import slot_size


def test_slots_wrap_around_and_come_back_out_of_order() -> None:
    ring = RingAllocator(10 * SLOT_ALIGNMENT)
    offsets = [ring.allocate(3 * SLOT_ALIGNMENT) for _ in range(3)]
    assert offsets == [0, 3 * SLOT_ALIGNMENT, 6 * SLOT_ALIGNMENT]
    assert ring.allocate(2 * SLOT_ALIGNMENT) is None, "only 1 page is left at the end"
    ring.release(3 * SLOT_ALIGNMENT)
    assert ring.allocate(3 * SLOT_ALIGNMENT) is None, "the oldest slot still holds the start"
    ring.release(0)
    assert ring.allocate(5 * SLOT_ALIGNMENT) == 0
    assert ring.lent == 2
    with pytest.raises(ValueError, match="no slot"):
        ring.release(SLOT_ALIGNMENT)
    with pytest.raises(ValueError, match="do not fit"):
        ring.allocate(11 * SLOT_ALIGNMENT)


def test_random_traffic_never_lends_overlapping_slots() -> None:
    size = 64 * SLOT_ALIGNMENT
    ring, daemon = RingAllocator(size), LentSlots(size)
    lent: dict[int, int] = {}
    chooser = random.Random(7)
    for _ in range(5000):
        if lent and (chooser.random() < 0.5 or len(lent) > 20):
            offset = chooser.choice(list(lent))
            ring.release(offset)
            assert daemon.give_back(offset)
            del lent[offset]
            continue
        length = chooser.randint(1, 9 * SLOT_ALIGNMENT)
        placed = ring.allocate(length)
        if placed is None:
            continue
        offset = placed
        daemon.take(offset, length)  # raises if the allocator lent an overlapping slot
        lent[offset] = length
        assert offset + slot_size(length) <= size


def test_the_daemon_refuses_slots_out_of_range_misaligned_or_still_lent() -> None:
    slots = LentSlots(16 * SLOT_ALIGNMENT)
    slots.take(4 * SLOT_ALIGNMENT, 2 * SLOT_ALIGNMENT)
    for offset, length, reason, words in [
        (5 * SLOT_ALIGNMENT, 10, "shm_in_use", "overlap"),
        (3 * SLOT_ALIGNMENT, SLOT_ALIGNMENT + 1, "shm_in_use", "overlap"),
        (100, 10, "bad_shm", "multiple"),
        (15 * SLOT_ALIGNMENT, 2 * SLOT_ALIGNMENT, "bad_shm", "outside"),
    ]:
        with pytest.raises(RefusalError, match=words) as refused:
            slots.take(offset, length, "acq")
        assert (refused.value.reason, refused.value.acquisition) == (reason, "acq")
    slots.take(3 * SLOT_ALIGNMENT, SLOT_ALIGNMENT)
    slots.take(6 * SLOT_ALIGNMENT, SLOT_ALIGNMENT)
    assert slots.count == 3
    assert not slots.give_back(0)
