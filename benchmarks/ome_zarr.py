"""OME-Zarr: framesink's daemon against acquire-zarr, and against its own OME-TIFF.

The same realistic 2048x2048 uint16 frames (Poisson noise on a smooth background) in
every writer; chunks of 256 whole rows (1 MiB, framesink's default) and shards of 16
frames in both Zarr writers:
  acquire-zarr        in-process ``ZarrStream.append(frame)`` (C++, its own threads),
                      blosc-lz4 level 1 with byte shuffle; the stream closed
  framesink zarr lz4  the shm publisher -> ``framesink serve --format ome-zarr
                      --compression blosc-lz4 --compression-level 1`` -> final
  framesink tiff      the same, uncompressed OME-TIFF
  framesink zarr      the same, uncompressed OME-Zarr
Each round runs all four; framesink's blosc-lz4 is compared with the mean of the
acquire-zarr rounds around it, the uncompressed OME-Zarr with the OME-TIFF of its own
round. Medians are printed, with the daemon's CPU seconds per GB and peak memory.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import acquire_zarr as aqz
import numpy as np

from .cases import POOL, Case, Options
from .compressed import CompressedRun, DaemonRound, realistic_pool, with_rounds, writer_table

CHUNK_ROWS = 256
SHARD_FRAMES = 16
LZ4 = ("--compression", "blosc-lz4", "--compression-level", "1")
ZARR = ("--format", "ome-zarr", "--shard-frames", str(SHARD_FRAMES))


def folder_bytes(path: Path) -> int:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(item.stat().st_size for item in files if item.is_file())


def acquire_zarr_round(options: Options, case: Case) -> CompressedRun:
    pool = realistic_pool(case.shape)
    root = options.folder / "acquire.zarr"
    rows, columns = case.shape
    dimensions = [
        aqz.Dimension(
            name="t", kind=aqz.DimensionType.TIME, array_size_px=0, chunk_size_px=1,
            shard_size_chunks=SHARD_FRAMES,
        ),
        aqz.Dimension(
            name="y", kind=aqz.DimensionType.SPACE, array_size_px=rows,
            chunk_size_px=CHUNK_ROWS, shard_size_chunks=rows // CHUNK_ROWS,
        ),
        aqz.Dimension(
            name="x", kind=aqz.DimensionType.SPACE, array_size_px=columns,
            chunk_size_px=columns, shard_size_chunks=1,
        ),
    ]  # fmt: skip
    settings = aqz.StreamSettings(store_path=str(root), version=aqz.ZarrVersion.V3)
    settings.arrays = [
        aqz.ArraySettings(
            dimensions=dimensions,
            data_type=np.uint16,
            compression=aqz.CompressionSettings(
                compressor=aqz.Compressor.BLOSC1,
                codec=aqz.CompressionCodec.BLOSC_LZ4,
                level=1,
                shuffle=1,
            ),
        )
    ]
    options.memory.prefault(case)
    cpu_before, start = time.process_time(), time.perf_counter()
    stream: Any = aqz.ZarrStream(settings)
    for index in range(case.count):
        stream.append(pool[index % POOL])
    stream.close()
    os.sync()
    total = time.perf_counter() - start
    run = CompressedRun("acquire-zarr", total, time.process_time() - cpu_before, folder_bytes(root))
    shutil.rmtree(root)
    return run


def framesink_round(
    options: Options, case: Case, name: str, args: tuple[str, ...], run_daemon: DaemonRound
) -> CompressedRun:
    run = run_daemon(
        options, case, "shm", "pull", (*options.daemon_args, *args), frames="realistic"
    )
    if run.record.frames_written != case.count:
        raise RuntimeError(f"framesink wrote {run.record.frames_written} of {case.count} frames")
    return CompressedRun(
        name, run.total_s, run.cpu_s, run.image_bytes, round(run.peak_rss / 2**20, 1)
    )


def compare(options: Options, case: Case, *, rounds: int, run_daemon: DaemonRound) -> str:
    """Interleaved rounds of the four writers; the report as text."""
    runs = [acquire_zarr_round(options, case)]
    lz4_ratios: list[float] = []
    plain_ratios: list[float] = []
    for _ in range(rounds):
        lz4 = framesink_round(options, case, "framesink zarr lz4", (*ZARR, *LZ4), run_daemon)
        tiff = framesink_round(options, case, "framesink tiff", (), run_daemon)
        plain = framesink_round(options, case, "framesink zarr", ZARR, run_daemon)
        after = acquire_zarr_round(options, case)
        before = next(run for run in reversed(runs) if run.writer == "acquire-zarr")
        lz4_ratios.append(lz4.mb_s(case) / ((before.mb_s(case) + after.mb_s(case)) / 2))
        plain_ratios.append(plain.mb_s(case) / tiff.mb_s(case))
        runs += [lz4, tiff, plain, after]
    return report(case, runs, lz4_ratios, plain_ratios)


WRITERS = ("acquire-zarr", "framesink zarr lz4", "framesink tiff", "framesink zarr")


def report(
    case: Case, runs: list[CompressedRun], lz4_ratios: list[float], plain_ratios: list[float]
) -> str:
    lines = [
        f"OME-Zarr {case.name}, {case.count} realistic frames, chunks of {CHUNK_ROWS} rows, "
        f"{SHARD_FRAMES} frames a shard; medians of {len(lz4_ratios)} interleaved rounds",
        *writer_table(
            case, {name: [run for run in runs if run.writer == name] for name in WRITERS}
        ),
        f"  framesink blosc-lz4 / acquire-zarr blosc-lz4: {with_rounds(lz4_ratios)}",
        f"  framesink OME-Zarr / framesink OME-TIFF, uncompressed: {with_rounds(plain_ratios)}",
        "  (acquire-zarr's CPU is its whole process's; framesink's is the daemon's alone,"
        " its peak RSS the daemon's)",
    ]
    return "\n".join(lines)
