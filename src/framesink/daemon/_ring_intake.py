"""Shared-memory rings as the dispatcher sees them: which acquisition takes its pixels
from which ring, and slots lent to writers as explicit leases."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from ..core import FramesHeader, RefusalError, StartHeader
from ..transport import Certificate, IngestSource, Ring, RingLease, RingServer
from ._settings import Settings


class RingIntake:
    """Rings by acquisition; ``server`` is set when the daemon accepts shared memory."""

    def __init__(self) -> None:
        self.server: RingServer | None = None
        self.by_acquisition: dict[str, Ring] = {}

    def ring_of(self, acquisition: str, start: StartHeader) -> Ring | None:
        """The ring a start names (None without one); RefusalError when none is known."""
        attached = start.shared_memory
        if attached is None:
            return None
        ring = None if self.server is None else self.server.ring(attached.ring)
        if ring is None:
            why = (
                "this daemon does not accept shared memory"
                if self.server is None
                else (
                    "no registered ring has this token (the publisher must register it first, "
                    "and rings end when their publisher disconnects)"
                )
            )
            raise RefusalError("bad_shm", why, acquisition)
        return ring

    def attach(self, acquisition: str, ring: Ring) -> None:
        self.by_acquisition[acquisition] = ring
        ring.acquisitions += 1

    def detach(self, acquisition: str) -> None:
        """The acquisition names no more slots: its ring may end once its publisher is done."""
        ring = self.by_acquisition.pop(acquisition, None)
        if ring is not None:
            ring.acquisitions -= 1

    def lend(self, header: FramesHeader) -> RingLease | None:
        """The slot a frames message names (None if its pixels came with it)."""
        return None if header.shm is None else self.lend_run([header])

    def lend_run(self, run: Sequence[FramesHeader]) -> RingLease:
        """The slots of frames messages whose pixels lie back to back, as one lease;
        RefusalError ``bad_shm`` when any cannot be lent (then none is)."""
        acquisition = run[0].acquisition
        ring = self.by_acquisition.get(acquisition)
        if ring is None:
            raise RefusalError(
                "bad_shm",
                f"acquisition {acquisition!r} has no shared-memory ring (not open, or "
                "started without one)",
                acquisition,
            )
        slots = tuple((h.shm.offset, h.shm.length) for h in run if h.shm is not None)
        return ring.lend_run(slots, acquisition)


def open_ring_source(
    context: zmq.Context[Any], rings: Path, settings: Settings, certificate: Certificate | None
) -> IngestSource:
    """A PULL socket beside the ring socket, private to this user like it.

    Messages of ring publishers are headers (the pixels are in the ring), so its
    queue may be deep: each wake-up of the receive loop then takes many messages.
    """
    previous = os.umask(0o177)
    try:
        return IngestSource(
            context,
            kind="pull",
            bind=[f"ipc://{rings}.zmq"],
            connect=[],
            receive_hwm=settings.ring_receive_hwm,
            max_message_bytes=int(settings.max_header_bytes),
            certificate=certificate,
        )
    finally:
        os.umask(previous)


def serve_ring_events(rings: RingServer, events: dict[Any, int], watched: set[int]) -> None:
    """Registrations and hang-ups among the receive loop's ``events``."""
    for fd in watched & events.keys():
        rings.on_readable(fd)
