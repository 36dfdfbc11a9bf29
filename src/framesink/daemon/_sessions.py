"""The dispatcher's writer sessions: live ones, the one each open acquisition receives
into, and the recently finished, with what the status shows of them."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core import (
    AcquisitionEntry,
    AcquisitionState,
    Counter,
    OpenAcquisition,
    RefusalError,
    utc_now,
)
from ._counters import Counters
from ._session import Session

log = logging.getLogger(__name__)

RECENT_FINISHED = 50
RECENT_REFUSED = 1000
"""Refused starts remembered by id, for publishers that ask why (bounded)."""


class Sessions:
    """Every session until its files are final; a run keeps its session even when a new
    run of the same acquisition id has started meanwhile. Called with the dispatcher's
    lock held."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.live: list[Session] = []
        self.receiving: dict[str, Session] = {}
        self.recent: deque[AcquisitionEntry] = deque(maxlen=RECENT_FINISHED)
        self.refused: OrderedDict[str, AcquisitionEntry] = OrderedDict()

    def add(self, session: Session) -> None:
        self.live.append(session)
        self.receiving[session.acquisition] = session

    def note_refused(self, name: str, error: RefusalError) -> None:
        """Keep a refused start's reason by id, for its publisher to ask for (a second
        start of an open id is not kept: the id's open run stays what it shows)."""
        if error.reason == "duplicate_start":
            return
        entry = AcquisitionEntry.refused(name, error.reason, error.detail, utc_now())
        self.refused.pop(entry.acquisition, None)
        self.refused[entry.acquisition] = entry
        while len(self.refused) > RECENT_REFUSED:
            self.refused.popitem(last=False)

    def entry_of(
        self, name: str, open_acquisitions: list[OpenAcquisition]
    ) -> AcquisitionEntry | None:
        """The newest entry of ``name``: live, recently finished or refused."""
        live, recent = self.entries(open_acquisitions)
        candidates = [e for e in [*live, *recent] if e.acquisition == name]
        if name in self.refused:
            candidates.append(self.refused[name])
        return max(candidates, key=lambda entry: entry.started, default=None)

    def latest_frame(self, name: str) -> np.ndarray[Any, Any] | None:
        """The newest thumbnail frame of the live acquisition ``name`` (any thread may
        ask: the list is copied before it is read)."""
        for session in reversed(tuple(self.live)):
            if session.acquisition == name:
                return session.latest.snapshot()
        return None

    def stop_receiving(self, session: Session) -> bool:
        """The acquisition takes no more messages; False if another run already took over."""
        if self.receiving.get(session.acquisition) is not session:
            return False
        del self.receiving[session.acquisition]
        return True

    def reap(self, retire_failed: Callable[[Session], None]) -> None:
        """Retire failed sessions and move finished ones to the recent list."""
        for session in list(self.live):
            report_overload(session, force=True)
            if session.failed:
                retire_failed(session)
            if not session.done:
                continue
            self.live.remove(session)
            entry = session.entry()
            self.recent.appendleft(entry)
            self.counters.add(Counter.FRAMES_WRITTEN, entry.frames_written)
            self.counters.add(Counter.FRAMES_MISSING, entry.frames_missing)
            self.counters.add(Counter.BYTES_WRITTEN, entry.bytes_written)
            failed = entry.state is AcquisitionState.FAILED
            self.counters.add(
                Counter.ACQUISITIONS_FAILED if failed else Counter.ACQUISITIONS_FINISHED
            )

    def entries(
        self, open_acquisitions: list[OpenAcquisition]
    ) -> tuple[list[AcquisitionEntry], list[AcquisitionEntry]]:
        """Status entries: (live sessions, recently finished)."""
        by_acquisition = self.counters.rejections_by_acquisition
        clock = {a.acquisition: a for a in open_acquisitions}
        live = []
        for session in self.live:
            entry = session.entry(by_acquisition.get(session.acquisition, 0))
            open_state = clock.get(session.acquisition)
            if open_state is not None and self.receiving.get(session.acquisition) is session:
                entry.idle_s, entry.idle_timeout = open_state.idle_s, open_state.idle_timeout
            live.append(entry)
        recent = [
            entry.model_copy(update={"rejected_messages": by_acquisition.get(entry.acquisition, 0)})
            for entry in self.recent
        ]
        return live, recent


def report_overload(session: Session, force: bool = False) -> None:
    """Warn about frames lost to a full queue, at most once a second per acquisition."""
    now = time.monotonic()
    if not session.unreported_overload or (not force and now - session.overload_reported_at < 1):
        return
    log.warning(
        "acquisition %s: queue full, %d more frames recorded as missing (SUB cannot wait; "
        "use PULL, a larger queue_bytes or a faster disk)",
        session.acquisition,
        session.unreported_overload,
    )
    session.unreported_overload = 0
    session.overload_reported_at = now
