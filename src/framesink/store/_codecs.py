"""The codecs (imagecodecs) and the one pool of threads every compressing image shares.

imagecodecs releases the GIL while it compresses, so threads give real parallelism. One
pool, sized to the machine, serves every open acquisition: two acquisitions compressing
at once share the cores instead of each starting as many threads as there are cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, cast

import imagecodecs
import numpy as np

from ..core import Compression

Encoder = Callable[[np.ndarray[Any, Any]], bytes]


class _SharedPool:
    """Holds the one pool; made on first use, it lives as long as the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(codec_workers(), thread_name_prefix="codec")
            return self._pool


_SHARED = _SharedPool()


def codec_workers() -> int:
    """Threads in the shared pool: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def codec_pool() -> ThreadPoolExecutor:
    """The process's compression pool."""
    return _SHARED.get()


def encoder(codec: Compression, level: int | None) -> Encoder:
    """Compress a C-contiguous array's bytes with ``codec`` at ``level``.

    Deflate is libdeflate's, in zlib framing (what TIFF's code 8 holds): faster than
    zlib's and a few percent smaller at the same level.
    """
    if codec is Compression.ZSTD:

        def zstd(data: np.ndarray[Any, Any]) -> bytes:
            return _as_bytes(imagecodecs.zstd_encode(cast(bytes, data), level=level))

        return zstd
    if codec is Compression.DEFLATE:

        def deflate(data: np.ndarray[Any, Any]) -> bytes:
            return _as_bytes(imagecodecs.deflate_encode(cast(bytes, data), level=level))

        return deflate
    raise ValueError(f"no encoder here for {codec.value}")


def settle(futures: Iterable[Future[Any]]) -> None:
    """Cancel what has not started and wait for the rest: after this no pool thread reads
    the frames those tasks were given (ring slots may be released)."""
    waiting = list(futures)
    for future in waiting:
        future.cancel()
    wait(waiting)


def _as_bytes(encoded: bytes | bytearray) -> bytes:
    return encoded if isinstance(encoded, bytes) else bytes(encoded)
