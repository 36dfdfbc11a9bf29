"""framesink's own FrameSink: each acquisition is written by an AcquisitionWriter in its format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core import (
    AcquisitionRecord,
    FinishReason,
    FrameChunk,
    OutputFiles,
    SinkProgress,
    SinkSpec,
)
from ._format import ImageFormat
from ._paths import open_output_folder
from ._writer import AcquisitionWriter


class StoreSink:
    """Creates the files at ``prepare``; everything else is the AcquisitionWriter's."""

    def __init__(self, spec: SinkSpec, image_format: ImageFormat) -> None:
        self.spec = spec
        self.format = image_format
        self._writer: AcquisitionWriter | None = None

    @property
    def writer(self) -> AcquisitionWriter:
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
        files = OutputFiles(spec.name, self.format.suffix)
        folder = open_output_folder(spec.data_root, spec.output_path, files, spec.on_exists)
        try:
            self._writer = AcquisitionWriter(
                folder,
                spec.name,
                spec.metadata,
                image_format=self.format,
                dtype=spec.layout.dtype,
                frame_shape=spec.layout.frame_shape,
                shape=spec.layout.leading_shape,
                acquisition=spec.acquisition,
                fsync_interval=spec.fsync_interval,
                options=spec.options,
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
            path=writer.path / (record.files.image if record else writer.files.partial),
            started=writer.started,
            counts=writer.ledger.counts(),
            direct_io=writer.direct_io,
            compression=writer.options.compression,
        )
