"""framesink's own FrameSink: each acquisition becomes an OME-TIFF written by StreamWriter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core import AcquisitionRecord, FinishReason, FrameChunk, SinkProgress, SinkSpec
from ._paths import open_output_folder
from ._writer import StreamWriter


class TiffSink:
    """Creates the files at ``prepare``; everything else is the StreamWriter's."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self._writer: StreamWriter | None = None

    @property
    def writer(self) -> StreamWriter:
        if self._writer is None:
            raise RuntimeError(f"the sink of {self.spec.acquisition!r} was never prepared")
        return self._writer

    def prepare(self) -> None:
        """Open the output folder below the data root and create the files.

        PathError (a ValueError) or OSError refuse the acquisition; folders this created
        are removed again.
        """
        if self._writer is not None:
            return
        spec = self.spec
        folder = open_output_folder(spec.data_root, spec.output_path, spec.name, spec.on_exists)
        try:
            self._writer = StreamWriter(
                folder,
                spec.name,
                spec.metadata,
                dtype=spec.layout.dtype,
                frame_shape=spec.layout.frame_shape,
                shape=spec.layout.leading_shape,
                acquisition=spec.acquisition,
                fsync_interval=spec.fsync_interval,
                direct_io=spec.direct_io,
            )
        except BaseException:
            folder.discard_created()
            folder.close()
            raise

    def write(self, chunks: Sequence[FrameChunk]) -> None:
        self.writer.write_batch(chunks)

    def skip(self, count: int) -> None:
        self.writer.skip(count)

    def drop(self, count: int) -> None:
        self.writer.note_dropped(count)

    def lose_messages(self, count: int) -> None:
        self.writer.note_lost_messages(count)

    def finalize(
        self,
        reason: FinishReason,
        *,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AcquisitionRecord:
        return self.writer.finalize(reason, error=error, metadata=metadata)

    def progress(self) -> SinkProgress:
        writer = self.writer
        record = writer.record
        return SinkProgress(
            path=writer.folder / (record.files.tiff if record else writer.files.partial),
            started=writer.started,
            frames_written=writer.frames_written,
            frames_missing=writer.frames_missing,
            frames_dropped=writer.frames_dropped,
            messages_lost=writer.messages_lost,
            bytes_written=writer.bytes_written,
            direct_io=writer.direct_io,
        )
