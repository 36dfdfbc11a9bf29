"""What is measured: the cases, their results, the frames, and memory prefaulting."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

POOL = 8
MB = 1e6
RAW_SLOT = struct.Struct("<QQ")
"""A ring slot as the raw shm publisher names it, and as releases name it: offset, length."""


@dataclass(frozen=True)
class Options:
    """How the runs are made (from the command line)."""

    folder: Path
    memory: Memory
    quiet: bool
    daemon_args: tuple[str, ...]
    ring_bytes: int = 256 << 20


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, int]
    count: int
    chunk: int

    @property
    def frame_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 2

    @property
    def total_bytes(self) -> int:
        return self.count * self.frame_bytes


@dataclass
class Result:
    case: str
    mode: str
    frames: int
    ingest_s: float
    total_s: float
    ingest_mb_s: float
    total_mb_s: float
    total_frames_s: float
    ratio: float | None = None
    peak_rss_mb: float | None = None
    frames_written: int | None = None
    frames_missing: int | None = None
    unaccounted: int | None = None
    daemon_cpu_s: float | None = None
    ring_mb: float | None = None
    cpu_s_per_gb: float | None = None

    @classmethod
    def timed(cls, case: Case, mode: str, ingest_s: float, total_s: float, **extra: Any) -> Result:
        return cls(
            case.name,
            mode,
            case.count,
            round(ingest_s, 3),
            round(total_s, 3),
            round(case.total_bytes / ingest_s / MB, 1),
            round(case.total_bytes / total_s / MB, 1),
            round(case.count / total_s, 1),
            **extra,
        )


def frame_pool(shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    """POOL distinct random frames, reused in turn (the same in every process)."""
    return np.random.default_rng(0).integers(0, 4096, (POOL, *shape), dtype=np.uint16)


def frame_stack(shape: tuple[int, int], chunk: int) -> np.ndarray[Any, Any]:
    """``chunk`` frames from the pool, for chunked sends."""
    pool = frame_pool(shape)
    return np.concatenate([pool] * (chunk // POOL + 1))[:chunk]


@dataclass(frozen=True)
class Memory:
    """Touches, then frees, as much memory as a run writes (untimed, before every run).

    A virtual machine's host may take back guest memory that sits free (free page
    reporting, ballooning); the next use of each page then costs a fault on the host.
    Measured here: page-cache writes after a few idle seconds ran at ~0.5 GB/s instead
    of ~2.4 GB/s. Touching the memory first starts every run, baseline and framesink
    alike, from the same state.
    """

    enabled: bool = True

    def prefault(self, case: Case) -> None:
        if self.enabled:
            block = np.ones(case.total_bytes + (256 << 20), np.uint8)
            del block
