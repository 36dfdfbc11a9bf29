"""Zarr v3's codecs for framesink's compressions: how a chunk is encoded, decoded and named.

A chunk is its C-order little-endian bytes (Zarr's ``bytes`` codec), then compressed:
``zstd``, ``deflate`` as Zarr's ``gzip`` codec (gzip framing), or ``blosc`` with
byte shuffle (lz4 or zstd inside). imagecodecs does the work (it releases the GIL, so
the shared pool's threads compress in parallel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import imagecodecs
import numpy as np

from ..core import Compression

Codec = Callable[[np.ndarray[Any, Any]], bytes]
Decoder = Callable[[bytes], bytes]

HELD = frozenset(Compression)
"""Every codec framesink knows has a Zarr v3 codec."""

_BLOSC_INSIDE = {Compression.BLOSC_LZ4: "lz4", Compression.BLOSC_ZSTD: "zstd"}
_BYTE_SHUFFLE = 1


def codec_documents(codec: Compression, level: int | None, itemsize: int) -> list[dict[str, Any]]:
    """The chunk codecs of the array's ``zarr.json`` (inside the sharding codec)."""
    chain: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codec is Compression.ZSTD:
        chain.append({"name": "zstd", "configuration": {"level": level, "checksum": False}})
    elif codec is Compression.DEFLATE:
        chain.append({"name": "gzip", "configuration": {"level": level}})
    elif codec in _BLOSC_INSIDE:
        chain.append(
            {
                "name": "blosc",
                "configuration": {
                    "cname": _BLOSC_INSIDE[codec],
                    "clevel": level,
                    "shuffle": "shuffle",
                    "typesize": itemsize,
                    "blocksize": 0,
                },
            }
        )
    return chain


def chunk_encoder(codec: Compression, level: int | None, itemsize: int) -> Codec | None:
    """Compress a C-contiguous chunk; None when chunks are stored as they are."""
    if codec is Compression.NONE:
        return None
    if codec is Compression.ZSTD:
        return lambda chunk: _bytes(imagecodecs.zstd_encode(cast(bytes, chunk), level=level))
    if codec is Compression.DEFLATE:
        return lambda chunk: _bytes(imagecodecs.gzip_encode(cast(bytes, chunk), level=level))
    inside = _BLOSC_INSIDE[codec]

    def blosc(chunk: np.ndarray[Any, Any]) -> bytes:
        return _bytes(
            imagecodecs.blosc_encode(
                cast(bytes, chunk),
                level=level,
                compressor=inside,
                shuffle=_BYTE_SHUFFLE,
                typesize=itemsize,
                numthreads=1,
            )
        )

    return blosc


def chunk_decoder(codec: Compression) -> Decoder:
    """The bytes of a chunk from what is stored (ValueError or the codec's error if torn)."""
    if codec is Compression.NONE:
        return lambda stored: stored
    if codec is Compression.ZSTD:
        return lambda stored: _bytes(imagecodecs.zstd_decode(stored))
    if codec is Compression.DEFLATE:
        return lambda stored: _bytes(imagecodecs.gzip_decode(stored))
    return lambda stored: _bytes(imagecodecs.blosc_decode(stored, numthreads=1))


def _bytes(encoded: bytes | bytearray | np.ndarray[Any, Any]) -> bytes:
    return encoded if isinstance(encoded, bytes) else bytes(encoded)
