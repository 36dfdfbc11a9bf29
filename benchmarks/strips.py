"""How big a compressed page's strips should be: writing speed, size and reading.

``python -m benchmarks.strips`` writes the same realistic 2048x2048 uint16 frames with
framesink's compressed series at several strip sizes and prints, for each: the writing
rate (the shared pool, every core), the size, the time tifffile takes to read one whole
plane, and to read 256 rows of one (decoding only the strips that hold them).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import tifffile

from framesink import StreamWriter
from framesink.tiff import _compressed

from .cases import MB
from .compressed import realistic_pool

SIZES = {"64 KB": 64 << 10, "256 KB": 256 << 10, "1 MB": 1 << 20, "whole page": 1 << 40}


def measure(folder: Path, codec: str, count: int, strip_bytes: int) -> dict[str, float]:
    pool = realistic_pool((2048, 2048))
    _compressed.STRIP_BYTES = strip_bytes
    start = time.perf_counter()
    with StreamWriter(
        folder, "s", {"axes": "TYX"}, dtype="uint16", frame_shape=(2048, 2048),
        compression=codec, fsync_interval=None, overwrite=True,
    ) as writer:  # fmt: skip
        for index in range(count):
            writer.write(pool[index % len(pool)])
    written = time.perf_counter() - start
    path = folder / "s.ome.tiff"
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[count // 2]
        plane = _best_of(page.asarray)
        region = _best_of(lambda: _region(tiff, page, 1024, 1280))
    return {
        "write_mb_s": count * pool[0].nbytes / written / MB,
        "smaller": count * pool[0].nbytes / path.stat().st_size,
        "plane_ms": plane * 1e3,
        "region_ms": region * 1e3,
    }


def _region(tiff: tifffile.TiffFile, page: Any, first: int, stop: int) -> list[Any]:
    """Rows ``first:stop`` of ``page``: only the strips holding them are read and decoded."""
    rows = int(page.rowsperstrip)
    wanted = range(first // rows, (stop - 1) // rows + 1)
    offsets = [page.dataoffsets[index] for index in wanted]
    counts = [page.databytecounts[index] for index in wanted]
    return [
        page.decode(data, index)[0]
        for (data, _), index in zip(
            tiff.filehandle.read_segments(offsets, counts, sort=False), wanted, strict=True
        )
    ]


def _best_of(read: Any, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.strips", description=__doc__)
    parser.add_argument("--codec", default="zstd", choices=["zstd", "deflate"])
    parser.add_argument("--count", type=int, default=64, help="frames per size")
    parser.add_argument("--dir", type=Path, help="where to write (default: temporary folder)")
    arguments = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="framesink-strips-", dir=arguments.dir))
    original = _compressed.STRIP_BYTES
    try:
        print(f"{arguments.codec} level 1, {arguments.count} frames of 2048x2048 uint16")
        print(
            f"{'strip':<12}{'write MB/s':>11}{'x smaller':>10}{'plane ms':>10}{'256 rows ms':>12}"
        )
        for name, size in SIZES.items():
            figures = measure(folder, arguments.codec, arguments.count, size)
            print(
                f"{name:<12}{figures['write_mb_s']:11.1f}{figures['smaller']:10.3f}"
                f"{figures['plane_ms']:10.1f}{figures['region_ms']:12.2f}"
            )
    finally:
        _compressed.STRIP_BYTES = original
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
