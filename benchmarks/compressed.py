"""Compressed OME-TIFF: framesink's daemon against tifffile's own compressed writing.

On the same realistic frames (Poisson noise on a smooth background, like an sCMOS
image; random bits would not compress), with the same codec, level and predictor:
  codec       one core compressing the frames in memory (imagecodecs, predictor 2):
              the pace one core sets, framesink's throughput is shown as a multiple
  tifffile    in-process ``TiffWriter.write(frame, compression=..., predictor=2,
              maxworkers=<cores>)`` per frame into a BigTIFF, closed and fsynced
  framesink   the shm publisher -> `framesink serve --compression ...` -> file final
Rounds are interleaved (tifffile, framesink, tifffile, ...); each framesink round is
compared with the mean of the tifffile rounds around it, and medians are printed.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import imagecodecs
import numpy as np
import tifffile

from framesink.store import codec_workers

from .cases import MB, POOL, Case, Options

if TYPE_CHECKING:
    from .runner import DaemonRun

LEVEL_ARGUMENT = "--compression-level"


def realistic_pool(shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    """POOL frames like a camera's: Poisson noise on a smooth background (seeded)."""
    rng = np.random.default_rng(0)
    rows, columns = np.indices(shape)
    background = 1000 + 600 * np.sin(columns / 150) * np.cos(rows / 230)
    return rng.poisson(background, (POOL, *shape)).astype(np.uint16)


@dataclass(frozen=True)
class CompressedRun:
    """One round of one writer: seconds until final, CPU seconds, file bytes, memory."""

    writer: str
    total_s: float
    cpu_s: float
    file_bytes: int
    peak_rss_mb: float | None = None

    def mb_s(self, case: Case) -> float:
        return case.total_bytes / self.total_s / MB

    def cpu_s_per_gb(self, case: Case) -> float:
        return self.cpu_s / (case.total_bytes / 1e9)


def codec_speed(codec: str, level: int, shape: tuple[int, int]) -> float:
    """MB/s of one core compressing the pool's frames (predictor 2 first)."""
    pool = realistic_pool(shape)
    encode = imagecodecs.zstd_encode if codec == "zstd" else imagecodecs.deflate_encode
    start = time.thread_time()
    rounds = 3
    for _ in range(rounds):
        for frame in pool:
            encode(imagecodecs.delta_encode(frame, axis=-1), level=level)
    return rounds * pool.nbytes / (time.thread_time() - start) / MB


def tifffile_round(options: Options, case: Case, codec: str, level: int) -> CompressedRun:
    pool = realistic_pool(case.shape)
    path = options.folder / "tifffile-compressed.tif"
    options.memory.prefault(case)
    cpu_before, start = time.process_time(), time.perf_counter()
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index in range(case.count):
            tiff.write(
                pool[index % POOL],
                compression=codec if codec == "zstd" else "adobe_deflate",
                compressionargs={"level": level},
                predictor=2,
                maxworkers=codec_workers(),
                metadata=None,
            )
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    total = time.perf_counter() - start
    run = CompressedRun("tifffile", total, time.process_time() - cpu_before, path.stat().st_size)
    path.unlink()
    return run


class DaemonRound(Protocol):
    """The runner's ``run_daemon`` (passed in: the runner imports this module)."""

    def __call__(
        self,
        options: Options,
        case: Case,
        transport: str,
        socket_kind: Literal["pull", "sub"],
        daemon_args: tuple[str, ...],
        *,
        frames: Literal["random", "realistic"],
    ) -> DaemonRun: ...


def framesink_round(
    options: Options, case: Case, codec: str, level: int, run_daemon: DaemonRound
) -> CompressedRun:
    args = (*options.daemon_args, "--compression", codec, LEVEL_ARGUMENT, str(level))
    run = run_daemon(options, case, "shm", "pull", args, frames="realistic")
    if run.record.frames_written != case.count:
        raise RuntimeError(f"framesink wrote {run.record.frames_written} of {case.count} frames")
    return CompressedRun(
        "framesink shm",
        run.total_s,
        run.cpu_s,
        run.image_bytes,
        round(run.peak_rss / 2**20, 1),
    )


def compare(
    options: Options, case: Case, codec: str, level: int, *, rounds: int, run_daemon: DaemonRound
) -> str:
    """Interleaved rounds of both writers; the report as text."""
    limit = codec_speed(codec, level, case.shape)
    runs = [tifffile_round(options, case, codec, level)]
    ratios: list[float] = []
    for _ in range(rounds):
        ours = framesink_round(options, case, codec, level, run_daemon)
        after = tifffile_round(options, case, codec, level)
        reference = (runs[-1].mb_s(case) + after.mb_s(case)) / 2
        ratios.append(ours.mb_s(case) / reference)
        runs += [ours, after]
    return report(case, f"{codec} level {level}", limit, runs, ratios)


def report(
    case: Case, codec: str, limit: float, runs: list[CompressedRun], ratios: list[float]
) -> str:
    ours = [run for run in runs if run.writer != "tifffile"]
    theirs = [run for run in runs if run.writer == "tifffile"]

    def median(values: list[float]) -> float:
        return statistics.median(values)

    ours_mb_s = median([run.mb_s(case) for run in ours])
    lines = [
        f"compressed {case.name}, {case.count} frames, {codec}, predictor 2, "
        f"{codec_workers()} cores; medians of {len(ours)} interleaved rounds",
        f"  codec on one core (the limit):  {limit:8.1f} MB/s",
        *writer_table(case, {"tifffile": theirs, "framesink shm": ours}),
    ]
    size_ratio = median([r.file_bytes for r in ours]) / median([r.file_bytes for r in theirs])
    lines += [
        f"  framesink / tifffile throughput: {with_rounds(ratios)}",
        f"  framesink / one core's codec speed: {ours_mb_s / limit:.2f}x",
        f"  framesink file size / tifffile's: {size_ratio:.3f}",
    ]
    return "\n".join(lines)


def writer_table(case: Case, groups: dict[str, list[CompressedRun]]) -> list[str]:
    """A header and one row per writer: medians of MB/s, CPU per GB, size, peak RSS."""
    width = max(len(name) for name in groups) + 2
    lines = [
        f"  {'writer':<{width}}{'MB/s':>9}{'CPU s/GB':>10}{'MB on disk':>11}{'x smaller':>10}"
        f"{'peak RSS MB':>12}"
    ]
    for name, group in groups.items():
        size = statistics.median(run.file_bytes for run in group)
        rss = [run.peak_rss_mb for run in group if run.peak_rss_mb is not None]
        lines.append(
            f"  {name:<{width}}{statistics.median(run.mb_s(case) for run in group):9.1f}"
            f"{statistics.median(run.cpu_s_per_gb(case) for run in group):10.2f}"
            f"{size / MB:11.1f}{case.total_bytes / size:10.2f}"
            f"{(statistics.median(rss) if rss else float('nan')):12.1f}"
        )
    return lines


def with_rounds(ratios: list[float]) -> str:
    """The median ratio and every round's, as the reports print them."""
    return f"{statistics.median(ratios):.3f}x (rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
