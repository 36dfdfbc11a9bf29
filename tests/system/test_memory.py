"""Memory stays flat however many frames stream through the writer."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile

from framesink import AcquisitionRecord, StreamWriter, recover

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


@pytest.mark.slow
def test_finalizing_many_small_frames_keeps_resident_memory_flat(tmp_path: Path) -> None:
    """The page index of 400,000 frames is about 100 MB; it must not be built in memory."""
    frames = 400_000
    chunk = np.arange(100_000, dtype=np.uint8).reshape(-1, 1, 1)
    writer = StreamWriter(
        tmp_path, "tiny", {"axes": "TYX"}, dtype="uint8", frame_shape=(1, 1), fsync_interval=None
    )
    for _ in range(frames // len(chunk)):
        writer.write(chunk)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = _peak_while(process, writer.finalize)
    assert writer.frames_written == frames
    page_index = (tmp_path / "tiny.ome.tiff").stat().st_size - frames
    assert page_index > 200 * frames, "the file must hold an IFD for every frame"
    assert peak - baseline < 32 * (1 << 20), (
        f"resident memory grew by {(peak - baseline) >> 20} MiB while finalizing"
    )
    with tifffile.TiffFile(tmp_path / "tiny.ome.tiff") as tiff:
        assert tiff.series[0].shape == (frames, 1, 1)
        assert int(tiff.pages[frames - 1].asarray()[0, 0]) == (frames - 1) % 100_000 % 256


def _peak_while(process: psutil.Process, work: Callable[[], object]) -> int:
    """The largest resident memory of ``process`` seen while ``work`` runs."""
    peak: list[int] = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        stop.set()
        sampler.join()
    return max(peak[0], int(process.memory_info().rss))


BIG_WRITER = """
import sys
import numpy as np
from framesink import StreamWriter

writer = StreamWriter(sys.argv[1], "big", {"axes": "TYX"}, dtype="uint16", frame_shape=(2048, 2048))
frame = np.zeros((2048, 2048), np.uint16)
for index in range(int(sys.argv[2])):
    frame[0, 0] = index
    writer.write(frame)
print("written", flush=True)
sys.stdin.read()
"""


def test_recovering_a_large_file_keeps_resident_memory_flat(tmp_path: Path) -> None:
    frames = 80  # 640 MiB
    with subprocess.Popen(
        [sys.executable, "-c", BIG_WRITER, str(tmp_path), str(frames)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "written"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    process = psutil.Process()
    baseline = process.memory_info().rss
    records: list[AcquisitionRecord] = []
    peak = _peak_while(process, lambda: records.extend(recover(tmp_path)))
    (record,) = records
    assert record.frames_written == frames
    pixels = tifffile.memmap(tmp_path / "big.ome.tiff")
    assert [int(pixels[i, 0, 0]) for i in (0, frames // 2, frames - 1)] == [
        0,
        frames // 2,
        frames - 1,
    ]
    del pixels
    assert peak - baseline < 64 * (1 << 20), (
        f"resident memory grew by {(peak - baseline) >> 20} MiB while recovering"
    )
