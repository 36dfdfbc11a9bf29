"""The data root's free space: measured at each housekeeping turn, it refuses new
acquisitions and ends the open ones before the disk is full."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


class DiskWatch:
    """Free bytes on the data root against ``min_free_bytes``."""

    def __init__(self, data_root: Path, min_free_bytes: int) -> None:
        self.data_root = data_root
        self.min_free_bytes = min_free_bytes
        self.free_bytes: int | None = None
        """At the last measurement; None until one succeeded."""

    def measure(self) -> bool:
        """Measure again; True if the disk is now too full to go on."""
        try:
            self.free_bytes = shutil.disk_usage(self.data_root).free
        except OSError as exc:
            log.error("cannot read free space of %s: %s", self.data_root, exc)
            return False
        return self.free_bytes < self.min_free_bytes

    def refuse_start_when_low(self) -> None:
        """OSError (refusing a start) when the last measurement was too low."""
        if self.free_bytes is not None and self.free_bytes < self.min_free_bytes:
            raise OSError(
                f"only {self.free_bytes} bytes free on the data root (minimum "
                f"{self.min_free_bytes}); acquisition refused"
            )
