"""Lossless compression as a start, a setting or a writer names it (pure).

Which codecs exist and which levels each takes are facts of the codecs; which codecs a
storage format can hold is the format's (``ImageFormat.compressions``). Everything that
accepts a compression from outside (the wire, the settings, the in-process writer) goes
through :func:`compression_of`, so a bad one is refused the same way everywhere:
``bad_compression``, before any file is made.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

from ._errors import RefusalError


class Compression(StrEnum):
    """A lossless codec by its name on the wire."""

    NONE = "none"
    ZSTD = "zstd"
    DEFLATE = "deflate"
    BLOSC_LZ4 = "blosc-lz4"
    BLOSC_ZSTD = "blosc-zstd"


LEVELS: dict[Compression, range] = {
    Compression.ZSTD: range(1, 23),
    Compression.DEFLATE: range(1, 13),
    Compression.BLOSC_LZ4: range(1, 10),
    Compression.BLOSC_ZSTD: range(1, 10),
}
"""The levels each codec takes (zstd 1-22; deflate 1-12 as libdeflate counts them)."""

DEFAULT_LEVEL: dict[Compression, int] = {
    Compression.ZSTD: 1,
    Compression.DEFLATE: 1,
    Compression.BLOSC_LZ4: 5,
    Compression.BLOSC_ZSTD: 1,
}
"""Levels chosen for a camera's pace: on two cores, zstd-1 and deflate-1 keep up with a
2048x2048 sCMOS at tens of frames a second (docs/performance.md); higher levels gain a
few percent of size for several times the CPU."""


def compression_of(
    name: object, level: object = None, acquisition: str | None = None
) -> tuple[Compression, int | None]:
    """The codec ``name`` and its level (its default level when None), checked.

    Raises RefusalError ``bad_compression`` for an unknown codec, a level that is not an
    integer, or one out of the codec's range.
    """
    try:
        codec = Compression(name if isinstance(name, str) else repr(name))
    except ValueError:
        known = ", ".join(repr(item.value) for item in Compression)
        raise RefusalError(
            "bad_compression", f"unknown compression {name!r}; known: {known}", acquisition
        ) from None
    if codec is Compression.NONE:
        if level is not None:
            raise RefusalError(
                "bad_compression", "compression_level needs a compression", acquisition
            )
        return codec, None
    if level is None:
        return codec, DEFAULT_LEVEL[codec]
    if not isinstance(level, int) or isinstance(level, bool):
        raise RefusalError(
            "bad_compression",
            f"compression_level must be an integer; got {level!r}",
            acquisition,
        )
    levels = LEVELS[codec]
    if level not in levels:
        raise RefusalError(
            "bad_compression",
            f"{codec.value} takes levels {levels.start}-{levels.stop - 1}; got {level}",
            acquisition,
        )
    return codec, level


def check_held(
    codec: Compression,
    held: Collection[Compression],
    format_name: str,
    acquisition: str | None = None,
) -> None:
    """Refuse (``bad_compression``) a codec the format ``format_name`` cannot hold."""
    if codec not in held:
        names = ", ".join(item.value for item in Compression if item in held)
        raise RefusalError(
            "bad_compression",
            f"{format_name} cannot hold {codec.value} compression; it holds {names}",
            acquisition,
        )
