"""One open acquisition in the daemon: a StreamWriter fed by its own writer thread.

The receive loop never waits on the disk: it hands work items to the session's queue
and the thread writes them. A failure in the thread fails this acquisition only; it is
logged, recorded in the status and in metadata.json.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .budget import ByteBudget
from .record import AcquisitionRecord, FinishReason
from .routing import AcquisitionState
from .writer import FrameMetadata, StreamWriter, WriteError

log = logging.getLogger(__name__)

QUEUE_WAIT = 5.0
GATHER_BYTES = 16 << 20
"""Queued frames up to this many bytes are written together (few large writes)."""


@dataclass(frozen=True)
class _WriteItem:
    frames: np.ndarray[Any, Any]
    frame_metadata: Sequence[FrameMetadata] | None
    nbytes: int


@dataclass(frozen=True)
class _SkipItem:
    count: int


@dataclass(frozen=True)
class _DropItem:
    count: int


@dataclass(frozen=True)
class _FinishItem:
    reason: FinishReason
    metadata: dict[str, Any] | None
    error: str | None


_Item = _WriteItem | _SkipItem | _DropItem | _FinishItem


class Session:
    """Owns a StreamWriter and the thread that writes to it."""

    def __init__(self, acquisition: str, writer: StreamWriter, budget: ByteBudget) -> None:
        self.acquisition = acquisition
        self.writer = writer
        self.started_at = time.monotonic()
        self.error: str | None = None
        self.record: AcquisitionRecord | None = None
        self.frames_lost = 0
        self.unreported_overload = 0
        self._finish_requested = False
        self.overload_reported_at = 0.0
        self._budget = budget
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._queued_bytes = 0
        self._done = threading.Event()
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
    ) -> None:
        """Queue frames whose ``nbytes`` were already taken from the budget."""
        self._queued_bytes += nbytes
        self._queue.put(_WriteItem(frames, frame_metadata, nbytes))

    def skip(self, count: int) -> None:
        self._queue.put(_SkipItem(count))

    def drop(self, count: int) -> None:
        self._queue.put(_DropItem(count))

    def finish(
        self, reason: FinishReason, metadata: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        """Queue the end of the acquisition; only the first call counts."""
        if self._finish_requested:
            return
        self._finish_requested = True
        self._queue.put(_FinishItem(reason, metadata, error))

    def join(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def snapshot(self) -> dict[str, Any]:
        """Status of this acquisition for the control endpoint."""
        writer = self.writer
        record = self.record
        elapsed = max(1e-9, time.monotonic() - self.started_at)
        if record is None:
            state = AcquisitionState.FAILED if self.done and self.error else AcquisitionState.OPEN
        elif record.error:
            state = AcquisitionState.FAILED
        else:
            state = AcquisitionState.FINISHED
        return {
            "acquisition": self.acquisition,
            "state": state.value,
            "path": str(writer.folder / (record.files.tiff if record else writer.files["partial"])),
            "frames_written": writer.frames_written,
            "frames_missing": writer.frames_missing,
            "frames_dropped": writer.frames_dropped,
            "bytes_written": writer.bytes_written,
            "direct_io": writer.direct_io,
            "queued_bytes": self._queued_bytes,
            "frames_discarded_after_error": self.frames_lost,
            "frames_per_s": round(writer.frames_written / elapsed, 1) if record is None else None,
            "started": writer.started,
            "complete": record.complete if record else False,
            "reason": record.reason.value if record else None,
            "error": (record.error if record else None) or self.error,
        }

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
                if isinstance(item, _FinishItem):
                    self._finalize(item.reason, item.metadata, item.error)
                    return
                if isinstance(item, _WriteItem):
                    writes, pending = self._gather(item)
                    self._write(writes)
                else:
                    self._apply(item)
        finally:
            self._done.set()

    def _gather(self, first: _WriteItem) -> tuple[list[_WriteItem], _Item | None]:
        """The write items queued behind ``first`` (up to GATHER_BYTES) and the next other item."""
        writes, size = [first], first.nbytes
        while size < GATHER_BYTES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _WriteItem):
                return writes, item
            writes.append(item)
            size += item.nbytes
        return writes, None

    def _write(self, writes: list[_WriteItem]) -> None:
        frames = sum(len(item.frames) for item in writes)
        written_before = self.writer.frames_written
        try:
            if self.error is None:
                self.writer.write_batch([(item.frames, item.frame_metadata) for item in writes])
            else:
                self.frames_lost += frames
        except Exception as exc:  # noqa: BLE001 - fails this acquisition only; _fail logs it
            self.frames_lost += frames - (self.writer.frames_written - written_before)
            self._fail(exc)
        finally:
            for item in writes:
                self._queued_bytes -= item.nbytes
                self._budget.release(item.nbytes)

    def _apply(self, item: _SkipItem | _DropItem) -> None:
        try:
            if self.error is None:
                if isinstance(item, _SkipItem):
                    self.writer.skip(item.count)
                else:
                    self.writer.note_dropped(item.count)
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
        self, reason: FinishReason, metadata: dict[str, Any] | None, error: str | None
    ) -> None:
        if self.record is not None:
            return
        if self.error is not None:
            reason, error = FinishReason.ERROR, self.error
        try:
            self.record = self.writer.finalize(reason, error=error, metadata=metadata)
        except WriteError as exc:
            self.record = exc.record
            self.error = str(exc)
            log.error("acquisition %s: could not finalize: %s", self.acquisition, exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("acquisition %s: finalize failed", self.acquisition)
        else:
            record = self.record
            log.info(
                "acquisition %s finished (%s): %d frames written, %d missing, %d dropped -> %s",
                self.acquisition,
                record.reason.value,
                record.frames_written,
                record.frames_missing,
                record.frames_dropped,
                self.writer.folder / record.files.tiff,
            )
