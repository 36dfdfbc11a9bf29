"""One open acquisition in the daemon: a FrameSink fed by its own writer thread.

The receive loop never waits on the disk: it hands work items to the session's queue
and the thread writes them. A failure in the thread fails this acquisition only; it is
logged, recorded in the status and in metadata.json.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

import numpy as np

from ..core import (
    AcquisitionEntry,
    AcquisitionRecord,
    AcquisitionState,
    ByteBudget,
    Drop,
    Finish,
    FinishReason,
    FrameChunk,
    FrameLayout,
    FrameMetadata,
    FrameSink,
    SeqGap,
    Skip,
    WriteError,
)
from ._tap import LatestFrame

log = logging.getLogger(__name__)

QUEUE_WAIT = 5.0
GATHER_BYTES = 16 << 20
"""Queued frames up to this many pixel bytes are written together by default: few
large writes, and the queue budget they hold comes back in steady portions."""
RING_GATHER_BYTES = 64 << 20
"""The most a batch written straight from a shared-memory ring holds (see
:func:`ring_gather_bytes`)."""


def ring_gather_bytes(ring_size: int) -> int:
    """How much of a ring one batch may hold: a quarter of it, so that the publisher
    keeps three quarters to fill while the batch is written, and at most
    RING_GATHER_BYTES. Large batches matter here: each direct write has a fixed cost
    in the kernel that a few large writes pay less often."""
    return max(1, min(RING_GATHER_BYTES, ring_size // 4))


@dataclass(frozen=True)
class _WriteItem:
    chunk: FrameChunk
    nbytes: int


Event = Skip | Drop | SeqGap | Finish
"""What the router says happened to an acquisition beside writes: the session's
vocabulary is the router's (and each maps to one FrameSink method)."""


WriteTimer = Callable[[float], None]
"""Told the seconds one write to the sink took."""
_Item = _WriteItem | Event


class Session:
    """Owns a prepared FrameSink and the thread that writes to it."""

    def __init__(
        self,
        acquisition: str,
        layout: FrameLayout,
        sink: FrameSink,
        budget: ByteBudget,
        *,
        write_timer: WriteTimer | None = None,
        after_release: Callable[[], None] | None = None,
        gather_bytes: int = GATHER_BYTES,
    ) -> None:
        """``after_release`` is called once a written batch's frames are released (a
        shared-memory ring sends the batch's releases then); a batch holds at most
        ``gather_bytes`` of pixels (one chunk always fits)."""
        self.acquisition = acquisition
        self._gather_bytes = gather_bytes
        self._write_timer = write_timer
        self._after_release = after_release
        self.layout = layout
        self.sink = sink
        self.started_at = time.monotonic()
        self.error: str | None = None
        self.record: AcquisitionRecord | None = None
        self.frames_lost = 0
        self.unreported_overload = 0
        self.overload_reported_at = 0.0
        self._finish_requested = False
        self._budget = budget
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._queued_bytes = 0
        self._done = threading.Event()
        self.latest = LatestFrame()
        self._thread = threading.Thread(target=self._run, name=f"writer-{acquisition}", daemon=True)
        self._thread.start()

    # -- called by the receive loop ------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def write(
        self,
        frames: np.ndarray[Any, Any],
        frame_metadata: Sequence[FrameMetadata] | None,
        nbytes: int,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Queue frames whose ``nbytes`` were already taken from the budget; ``release``
        is called once they are written or given up."""
        self._queued_bytes += nbytes
        self._queue.put(_WriteItem(FrameChunk(frames, frame_metadata, release), nbytes))

    def apply(self, event: Event) -> None:
        """Queue an event for the writer thread; only the first Finish counts."""
        if isinstance(event, Finish):
            if self._finish_requested:
                return
            self._finish_requested = True
        self._queue.put(event)

    def join(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def entry(self, rejected_messages: int = 0) -> AcquisitionEntry:
        """Status of this acquisition for the control endpoint."""
        progress = self.sink.progress()
        record = self.record
        elapsed = max(1e-9, time.monotonic() - self.started_at)
        if record is None:
            state = AcquisitionState.FAILED if self.done and self.error else AcquisitionState.OPEN
        elif record.error:
            state = AcquisitionState.FAILED
        else:
            state = AcquisitionState.FINISHED
        return AcquisitionEntry(
            acquisition=self.acquisition,
            state=state,
            path=str(progress.path),
            **progress.counts.model_dump(),
            direct_io=progress.direct_io,
            compression=progress.compression,
            queued_bytes=self._queued_bytes,
            frames_discarded_after_error=self.frames_lost,
            frames_per_s=None if record else round(progress.counts.frames_written / elapsed, 1),
            started=progress.started,
            complete=record.complete if record else False,
            reason=record.reason if record else None,
            error=(record.error if record else None) or self.error,
            rejected_messages=rejected_messages,
        )

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        pending: _Item | None = None
        try:
            while True:
                item, pending = pending, None
                if item is None:
                    try:
                        item = self._queue.get(timeout=QUEUE_WAIT)
                    except queue.Empty:
                        continue
                match item:
                    case Finish(_, reason, metadata, error):
                        self._finalize(reason, metadata, error)
                        return
                    case _WriteItem():
                        writes, pending = self._gather(item)
                        item = None  # _write lets go of the frames before releasing them
                        self._write(writes)
                    case Skip(_, _, count):
                        self._apply(self.sink.skip, count)
                    case Drop(_, count):
                        self._apply(self.sink.drop, count)
                    case SeqGap(_, missed):
                        self._apply(self.sink.lose_messages, missed)
                    case _:
                        assert_never(item)
        finally:
            self._done.set()

    def _gather(self, first: _WriteItem) -> tuple[list[_WriteItem], _Item | None]:
        """The write items queued behind ``first`` (up to ``gather_bytes`` of pixels) and
        the next other item."""
        writes, size = [first], first.chunk.frames.nbytes
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return writes, None
            if not isinstance(item, _WriteItem):
                return writes, item
            size += item.chunk.frames.nbytes  # not item.nbytes: a ring slot costs 4 KiB
            if size > self._gather_bytes:
                return writes, item
            writes.append(item)

    def _frames_written(self) -> int:
        return self.sink.progress().counts.frames_written

    def _write(self, writes: list[_WriteItem]) -> None:
        frames = sum(len(item.chunk) for item in writes)
        written_before = self._frames_written()
        try:
            if self.error is None:
                began = time.perf_counter()
                self.sink.write([item.chunk for item in writes])
                self.latest.offer(writes[-1].chunk.frames)
                if self._write_timer is not None:
                    self._write_timer(time.perf_counter() - began)
            else:
                self.frames_lost += frames
        except Exception as exc:  # noqa: BLE001 - fails this acquisition only; _fail logs it
            self.frames_lost += frames - (self._frames_written() - written_before)
            self._fail(exc)
        finally:
            nbytes = sum(item.nbytes for item in writes)
            self._queued_bytes -= nbytes
            self._budget.release(nbytes)
            # No view of a ring slot may outlive its release (the ring is unmapped then).
            releases = [item.chunk.release for item in writes if item.chunk.release is not None]
            writes.clear()
            for release in releases:
                release()
            if releases and self._after_release is not None:
                self._after_release()

    def _apply(self, operation: Callable[[int], None], count: int) -> None:
        try:
            if self.error is None:
                operation(count)
        except Exception as exc:  # noqa: BLE001 - fails this acquisition only; _fail logs it
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """A write failed: record why and finalize the acquisition as failed."""
        self.error = (
            (exc.strerror or str(exc))
            if isinstance(exc, OSError)
            else f"{type(exc).__name__}: {exc}"
        )
        log.error(
            "acquisition %s: write failed, finalizing it as failed: %s",
            self.acquisition,
            self.error,
            exc_info=not isinstance(exc, OSError),
        )
        self._finalize(FinishReason.ERROR, None, self.error)

    def _finalize(
        self, reason: FinishReason, metadata: Mapping[str, Any] | None, error: str | None
    ) -> None:
        if self.record is not None:
            return
        if self.error is not None:
            reason, error = FinishReason.ERROR, self.error
        try:
            self.record = self.sink.finalize(reason, error=error, metadata=metadata)
        except WriteError as exc:
            self.record = exc.record
            self.error = str(exc)
            log.error("acquisition %s: could not finalize: %s", self.acquisition, exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("acquisition %s: finalize failed", self.acquisition)
        else:
            log.info(
                "acquisition %s finished (%s): %d frames written, %d missing, %d dropped -> %s",
                self.acquisition,
                self.record.reason.value,
                self.record.frames_written,
                self.record.frames_missing,
                self.record.frames_dropped,
                self.sink.progress().path,
            )
