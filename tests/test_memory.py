"""Memory stays flat however many frames stream through the writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil

from framesink import StreamWriter

FRAME_SHAPE = (2048, 2048)
GIB = 1 << 30


def test_streaming_one_gib_keeps_resident_memory_flat(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 4096, FRAME_SHAPE, dtype=np.uint16)
    frames = GIB // frame.nbytes + 8
    process = psutil.Process()
    writer = StreamWriter(tmp_path, "big", {"axes": "TYX"}, dtype="uint16", frame_shape=FRAME_SHAPE)
    writer.write(frame)
    baseline = process.memory_info().rss
    peak = baseline
    for index in range(1, frames):
        frame[0, 0] = index
        writer.write(frame, [{"delta_t": index * 0.01}])
        peak = max(peak, process.memory_info().rss)
    record = writer.finalize()
    peak = max(peak, process.memory_info().rss)
    assert record.bytes_written >= GIB
    assert (tmp_path / "big.ome.tiff").stat().st_size > GIB
    assert peak - baseline < 50 * (1 << 20), (
        f"resident memory grew by {(peak - baseline) >> 20} MiB"
    )
