"""The files of an acquisition while it is written: image, sidecar and journal.

Each append reaches them in the order that makes a crash recoverable: the pixels, then
the frames' metadata lines, then the journal's count of frames the image holds (which
recovery trusts). A thread fsyncs all three every ``fsync_interval`` seconds beside
the writes, which bounds what a power loss can take.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core import FrameLayout, FrameMetadata, OutputFiles, StorageOptions
from ._folder import Folder
from ._format import Image, ImageFormat
from ._journal import Journal, JournalHeader
from ._sidecar import Sidecar, read_sidecar

log = logging.getLogger(__name__)


class LiveFiles:
    """Creates the journal (first: recovery needs it), the sidecar and the image."""

    def __init__(
        self,
        folder: Folder,
        files: OutputFiles,
        image_format: ImageFormat,
        layout: FrameLayout,
        options: StorageOptions,
        *,
        header: JournalHeader,
    ) -> None:
        self.folder = folder
        self.files = files
        self.sidecar = Sidecar(folder, files.sidecar)
        self.journal = Journal(folder, header)
        try:
            self.image: Image = image_format.create(folder, files, layout, options, self.journal)
        except BaseException:
            self.journal.remove()
            folder.remove(files.partial)
            raise
        self._sync_lock = threading.Lock()
        self._synced = 0
        """Frames the last ``synced`` journal event named."""
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None

    @property
    def frames(self) -> int:
        """Frames (written or zero-filled) the image holds."""
        return self.image.frames

    def append(
        self, chunks: Sequence[np.ndarray[Any, Any]], frame_metadata: Sequence[FrameMetadata]
    ) -> None:
        """Write the pixels, then the sidecar lines, then the count (on an OSError, of
        the frames that did reach the image)."""
        first = self.frames
        try:
            self.image.append(chunks)
        finally:
            stored = self.frames - first
            self.sidecar.append(
                (first + offset, meta)
                for offset, meta in enumerate(frame_metadata[:stored])
                if meta
            )
            self.journal.append({"frames": self.frames})

    def zero_fill(self, count: int) -> None:
        """Journal ``count`` missing frames from the end, then extend the image by them."""
        first = self.frames
        self.journal.append({"missing": [first, first + count - 1]})
        self.image.append_empty(count)
        self.journal.append({"frames": self.frames})

    # -- durability --------------------------------------------------------------------
    def sync_every(self, interval: float | None, name: str) -> None:
        """fsync every ``interval`` seconds beside the writes (never with None or 0)."""
        if interval:
            self._syncer = threading.Thread(
                target=self._sync_periodically, args=(interval,), name=f"fsync-{name}", daemon=True
            )
            self._syncer.start()

    def sync(self) -> None:
        """Force everything handed to the OS so far to stable storage, and say in the
        journal how many frames that made durable (what recovery trusts after a power
        loss)."""
        with self._sync_lock:
            if self._closing.is_set():
                return
            frames = self.frames
            self.image.sync()
            self.sidecar.sync()
            if frames != self._synced:  # an idle time-lapse adds no line a second
                self.journal.append({"synced": frames})
                self._synced = frames
            self.journal.sync()

    def _sync_periodically(self, interval: float) -> None:
        while not self._closing.wait(interval):
            try:
                self.sync()
            except (OSError, ValueError) as exc:
                log.warning("%s: periodic fsync failed: %s", self.files.name, exc)

    def stop_syncing(self) -> None:
        with self._sync_lock:
            self._closing.set()
        if self._syncer is not None:
            self._syncer.join()

    # -- closing -----------------------------------------------------------------------
    def complete(self, metadata: Mapping[str, Any], errors: list[str]) -> str:
        """Close, describe and rename the image; return the name it ends up under.

        Each step degrades gracefully (what went wrong is added to ``errors``): an image
        that cannot be closed stays under its temporary name for ``framesink recover``;
        one whose metadata cannot be embedded is still a readable image.
        """
        try:
            self.image.close()
            self.sidecar.close()
        except (OSError, ValueError) as exc:
            errors.append(
                f"could not close {self.files.partial}: {exc}; "
                "`framesink recover` rebuilds it from the journal once the cause is fixed"
            )
            self._close_quietly()
            return self.files.partial
        try:
            self.image.describe(metadata, read_sidecar(self.folder, self.files.sidecar))
        except (OSError, ValueError) as exc:
            errors.append(f"could not embed the metadata: {exc}; the pixels are intact")
        try:
            self._publish()
        except OSError as exc:
            errors.append(f"could not rename {self.files.partial}: {exc}")
            return self.files.partial
        return self.files.image

    def _close_quietly(self) -> None:
        for close in (self.image.close_quietly, self.sidecar.close):
            try:
                close()
            except (OSError, ValueError):
                continue

    def _publish(self) -> None:
        """fsync the closed image and give it its final name."""
        descriptor = self.folder.open(self.files.partial)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self.folder.rename(self.files.partial, self.files.image)
        self.folder.sync()
