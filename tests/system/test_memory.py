"""Memory stays flat however many frames stream through the writer."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import tifffile

from framesink import StreamWriter, recover

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
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        (record,) = recover(tmp_path)
    finally:
        stop.set()
        sampler.join()
    assert record.frames_written == frames
    pixels = tifffile.memmap(tmp_path / "big.ome.tiff")
    assert [int(pixels[i, 0, 0]) for i in (0, frames // 2, frames - 1)] == [
        0,
        frames // 2,
        frames - 1,
    ]
    del pixels
    assert peak[0] - baseline < 64 * (1 << 20), (
        f"resident memory grew by {(peak[0] - baseline) >> 20} MiB while recovering"
    )
