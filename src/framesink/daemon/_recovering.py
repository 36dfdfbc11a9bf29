"""Recovery of interrupted acquisitions at start, beside normal work.

Live acquisitions hold their journal's lock, so recovery never touches them. A folder
that cannot be recovered is reported in the status and the log and marked on disk;
later starts report it again without retrying (``framesink recover`` retries).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..core import RecoveryFailure
from ..store import RecoveryError, RecoveryOutcome

log = logging.getLogger(__name__)


class RecoverEach(Protocol):
    """Recovery of every interrupted acquisition under a folder, one outcome each."""

    def __call__(
        self, path: str | Path, *, retry_failed: bool = True
    ) -> Iterator[RecoveryOutcome]: ...


class BackgroundRecovery:
    """Runs recovery of a data root in its own thread; failures stay visible."""

    def __init__(self, data_root: Path, recover_each: RecoverEach) -> None:
        self.data_root = data_root
        self._recover_each = recover_each
        self._failures: list[RecoveryFailure] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failures(self) -> list[RecoveryFailure]:
        with self._lock:
            return list(self._failures)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for outcome in self._recover_each(self.data_root, retry_failed=False):
                if outcome.record is not None:
                    log.warning(
                        "recovered interrupted acquisition %s (%d frames)",
                        outcome.record.acquisition,
                        outcome.record.frames_written,
                    )
                elif outcome.error is not None:
                    with self._lock:
                        self._failures.append(
                            RecoveryFailure(folder=str(outcome.folder), error=outcome.error)
                        )
        except (RecoveryError, OSError) as exc:
            log.error("interrupted acquisitions could not be looked for: %s", exc)
