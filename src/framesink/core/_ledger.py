"""The ledger of one acquisition: what became of its frames, whatever the format (pure).

It holds the numbers the record, the status and the journal report (frames written,
missing ranges, dropped frames, lost messages) as running counts, so that asking for
them costs nothing however long the acquisition runs.
"""

from __future__ import annotations

from ._layout import FrameLayout
from ._record import AcquisitionFiles, AcquisitionRecord, FinishReason, FrameCounts, utc_now
from ._sink import StorageOptions
from ._version import __version__

NO_OPTIONS = StorageOptions()


class Ledger:
    """Counts kept as frames are stored, skipped, dropped or lost."""

    def __init__(
        self,
        acquisition: str,
        layout: FrameLayout,
        started: str | None = None,
        *,
        format_name: str | None = None,
        options: StorageOptions = NO_OPTIONS,
    ) -> None:
        """``format_name`` and ``options`` say how the pixels are stored (for the record)."""
        self.acquisition = acquisition
        self.layout = layout
        self.format_name = format_name
        self.options = options
        self.started = started or utc_now()
        self.frames_written = 0
        self.frames_missing = 0
        self.frames_dropped = 0
        self.messages_lost = 0
        self.missing_ranges: list[list[int]] = []

    @property
    def bytes_written(self) -> int:
        """Pixel bytes received and stored (zero-filled frames not counted)."""
        return self.frames_written * self.layout.frame_bytes

    def note_written(self, count: int) -> None:
        self.frames_written += count

    def note_missing(self, first: int, count: int) -> None:
        """``count`` frames from ``first`` never came; the image holds zeros there.

        A range right after the last one extends it: however many messages a SUB
        overload loses in a row, they stay one range.
        """
        last = first + count - 1
        if self.missing_ranges and self.missing_ranges[-1][1] == first - 1:
            self.missing_ranges[-1][1] = last
        else:
            self.missing_ranges.append([first, last])
        self.frames_missing += count

    def note_dropped(self, count: int) -> None:
        self.frames_dropped += count

    def note_lost_messages(self, count: int) -> None:
        self.messages_lost += count

    def counts(self) -> FrameCounts:
        return FrameCounts(
            frames_written=self.frames_written,
            frames_missing=self.frames_missing,
            frames_dropped=self.frames_dropped,
            messages_lost=self.messages_lost,
            bytes_written=self.bytes_written,
        )

    def record(
        self,
        reason: FinishReason,
        files: AcquisitionFiles,
        frames_in_image: int,
        error: str | None,
    ) -> AcquisitionRecord:
        """The acquisition record for an image holding ``frames_in_image`` frames."""
        return AcquisitionRecord(
            acquisition=self.acquisition,
            files=files,
            format=self.format_name,
            compression=self.options.compression,
            compression_level=self.options.compression_level,
            dtype=self.layout.dtype.name,
            axes=self.layout.axes,
            shape=list(self.layout.file_shape(frames_in_image)),
            declared_shape=list(self.layout.leading_shape),
            **self.counts().model_dump(),
            missing_ranges=[list(r) for r in self.missing_ranges],
            started=self.started,
            stopped=utc_now(),
            complete=(
                reason is FinishReason.STOP
                and error is None
                and not self.missing_ranges
                and not self.messages_lost
            ),
            reason=reason,
            error=error,
            version=__version__,
        )
