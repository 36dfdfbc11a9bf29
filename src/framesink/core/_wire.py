"""Wire protocol v1: decode and encode the multipart messages cameras publish (pure).

Decoding validates the whole header before any pixel is touched and raises WireError
with a precise reason. Nothing from the wire is pickled or evaluated: msgpack is
decoded with size limits and without extension types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ._errors import RefusalError
from ._layout import SUPPORTED_DTYPES, FrameLayout, LayoutError
from ._models import RESERVED_METADATA_KEY, MetaData

PROTOCOL_VERSION = 1
MESSAGE_TYPES = ("start", "frames", "stop", "abort")
ACQUISITION_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
MAX_HEADER_BYTES = 4 << 20
MAX_FRAMES_PER_MESSAGE = 1 << 20
MAX_METADATA_DEPTH = 32
MAX_CONTAINER_ITEMS = 1 << 20

AcquisitionId = Annotated[str, Field(pattern=ACQUISITION_ID_PATTERN)]
JsonMap = dict[str, Any]


class WireError(RefusalError):
    """A message that breaks the wire protocol (undecodable, wrong types or sizes)."""


def check_json_value(value: Any, where: str, depth: int = 0) -> None:
    """Raise ValueError unless ``value`` is plain JSON (finite numbers, str keys)."""
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} holds {value}, which JSON cannot represent")
        return
    if isinstance(value, list):
        for position, item in enumerate(value):
            check_json_value(item, f"{where}[{position}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            check_json_value(item, f"{where}.{key}", depth + 1)
        return
    raise ValueError(f"{where} holds a {type(value).__name__}, which is not JSON")


def _json_map(value: JsonMap, where: str) -> JsonMap:
    check_json_value(value, where)
    return value


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Literal[1]
    acquisition: AcquisitionId
    seq: Annotated[int, Field(ge=0)]


class OutputLocation(BaseModel):
    """Where an acquisition goes, relative to the daemon's data root."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    output_path: Annotated[str, Field(min_length=1, max_length=1024)]
    output_name: Annotated[str, Field(min_length=1, max_length=200)]


RING_TOKEN_PATTERN = r"^[0-9a-f]{32}$"


class RingAttachment(BaseModel):
    """A start's shared-memory ring: the token the daemon gave at registration."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ring: Annotated[str, Field(pattern=RING_TOKEN_PATTERN)]


class RingSlice(BaseModel):
    """Where a frames message's pixels are in the acquisition's ring."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    offset: Annotated[int, Field(ge=0, le=1 << 53)]
    length: Annotated[int, Field(ge=1, le=1 << 53)]


class StartHeader(_Header):
    type: Literal["start"]
    metadata: JsonMap
    output: OutputLocation
    dtype: Literal[SUPPORTED_DTYPES]  # type: ignore[valid-type]
    frame_shape: list[Annotated[int, Field(ge=1, le=1 << 20)]]
    shape: list[Annotated[int, Field(ge=1)] | None] | None = None
    idle_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    shared_memory: RingAttachment | None = None
    format: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """The storage format's name; the daemon's default without it."""
    compression: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """The codec's name; the daemon's default without it (checked when the sink opens:
    ``bad_compression``)."""
    compression_level: bool | int | float | str | None = None
    """Any scalar here: a level that is not an integer is refused as ``bad_compression``,
    not as a malformed start."""
    chunk_shape: (
        Annotated[list[Annotated[int, Field(ge=1, le=1 << 20)]], Field(min_length=2, max_length=2)]
        | None
    ) = None
    """Rows and columns of a frame one chunk holds (formats that chunk; others ignore it)."""
    shard_frames: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    """Frames a shard aims to hold (formats that shard; others ignore it)."""

    @model_validator(mode="after")
    def _check(self) -> StartHeader:
        if self.seq != 0:
            raise ValueError(f"a start message has seq 0; got {self.seq}")
        _json_map(self.metadata, "metadata")
        if RESERVED_METADATA_KEY in self.metadata:
            raise ValueError(f"metadata key {RESERVED_METADATA_KEY!r} is reserved")
        MetaData.model_validate(self.metadata)
        self.layout()
        return self

    def layout(self) -> FrameLayout:
        try:
            return FrameLayout.create(
                self.metadata["axes"], self.dtype, self.frame_shape, self.shape
            )
        except LayoutError as exc:
            raise ValueError(str(exc)) from None


class FramesHeader(_Header):
    type: Literal["frames"]
    index: Annotated[int, Field(ge=0, le=1 << 53)]
    count: Annotated[int, Field(ge=1, le=MAX_FRAMES_PER_MESSAGE)]
    frame_metadata: list[JsonMap | None] | None = None
    shm: RingSlice | None = None

    @model_validator(mode="after")
    def _check(self) -> FramesHeader:
        if self.frame_metadata is not None:
            if len(self.frame_metadata) != self.count:
                raise ValueError(
                    f"frame_metadata has {len(self.frame_metadata)} entries for count {self.count}"
                )
            for position, entry in enumerate(self.frame_metadata):
                if entry is not None:
                    _json_map(entry, f"frame_metadata[{position}]")
        return self


class StopHeader(_Header):
    type: Literal["stop"]
    metadata: JsonMap | None = None
    frame_count: Annotated[int, Field(ge=0, le=1 << 53)] | None = None

    @model_validator(mode="after")
    def _check(self) -> StopHeader:
        if self.metadata is not None:
            _json_map(self.metadata, "metadata")
            if RESERVED_METADATA_KEY in self.metadata:
                raise ValueError(f"metadata key {RESERVED_METADATA_KEY!r} is reserved")
            if "axes" in self.metadata:
                raise ValueError("a stop message cannot change 'axes'")
        return self


class AbortHeader(_Header):
    type: Literal["abort"]
    reason: Annotated[str, Field(max_length=4096)] | None = None


Header = Annotated[
    StartHeader | FramesHeader | StopHeader | AbortHeader, Field(discriminator="type")
]
_HEADER_ADAPTER: TypeAdapter[StartHeader | FramesHeader | StopHeader | AbortHeader] = TypeAdapter(
    Header
)


@dataclass(frozen=True)
class Message:
    """One decoded message; ``payload`` is a zero-copy view of the pixel part."""

    topic: bytes
    header: StartHeader | FramesHeader | StopHeader | AbortHeader
    payload: memoryview | None = None

    @property
    def acquisition(self) -> str:
        return self.header.acquisition


def _unpack_header(data: bytes | memoryview, max_header_bytes: int) -> Any:
    if len(data) > max_header_bytes:
        raise WireError(
            "header_too_large", f"header of {len(data)} bytes exceeds {max_header_bytes}"
        )
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_header_bytes,
            max_bin_len=max_header_bytes,
            max_array_len=MAX_CONTAINER_ITEMS,
            max_map_len=MAX_CONTAINER_ITEMS,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise WireError(
            "not_msgpack", f"header is not a valid msgpack map ({type(exc).__name__}: {exc})"
        ) from None


def _peek_acquisition(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("acquisition")
    if isinstance(value, str) and re.match(ACQUISITION_ID_PATTERN, value):
        return value
    return None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        location = ".".join(str(p) for p in item["loc"][1:]) or "header"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def decode(
    parts: Sequence[bytes | memoryview], max_header_bytes: int = MAX_HEADER_BYTES
) -> Message:
    """Decode one multipart message or raise WireError saying why not."""
    if len(parts) not in (2, 3):
        raise WireError("bad_multipart", f"expected 2 or 3 message parts, got {len(parts)}")
    raw = _unpack_header(parts[1], max_header_bytes)
    if not isinstance(raw, dict):
        raise WireError("header_not_map", f"header must be a msgpack map, got {type(raw).__name__}")
    if raw.get("v") != PROTOCOL_VERSION:
        raise WireError(
            "bad_version",
            f"unsupported protocol version v={raw.get('v')!r}; this is v1",
            _peek_acquisition(raw),
        )
    if raw.get("type") not in MESSAGE_TYPES:
        raise WireError(
            "bad_type",
            f"unknown message type {raw.get('type')!r}; expected one of {', '.join(MESSAGE_TYPES)}",
            _peek_acquisition(raw),
        )
    try:
        header = _HEADER_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise WireError(f"bad_{raw['type']}", _describe(exc), _peek_acquisition(raw)) from None
    acquisition = header.acquisition
    payload = memoryview(parts[2]) if len(parts) == 3 else None
    carried = isinstance(header, FramesHeader) and header.shm is None
    if carried and payload is None:
        raise WireError(
            "missing_payload", "a frames message needs a third part with the pixels", acquisition
        )
    if not carried and payload is not None:
        where = "its pixels are in shared memory" if header.type == "frames" else "none"
        raise WireError(
            "unexpected_payload",
            f"a {header.type} message has no payload part here ({where})",
            acquisition,
        )
    return Message(bytes(parts[0]), header, payload)


# -- encoding (publisher side) ----------------------------------------------------------
def pack_header(header: Mapping[str, Any]) -> bytes:
    """msgpack-encode a header map."""
    packed: bytes = msgpack.packb(dict(header), use_bin_type=True)
    return packed


def start_header(
    acquisition: str,
    *,
    metadata: Mapping[str, Any],
    output_path: str,
    output_name: str,
    dtype: str,
    frame_shape: Sequence[int],
    shape: Sequence[int | None] | None = None,
    idle_timeout: float | None = None,
    ring: str | None = None,
    format: str | None = None,
    compression: str | None = None,
    compression_level: int | None = None,
    chunk_shape: Sequence[int] | None = None,
    shard_frames: int | None = None,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": "start",
        "acquisition": acquisition,
        "seq": 0,
        "metadata": dict(metadata),
        "output": {"output_path": output_path, "output_name": output_name},
        "dtype": dtype,
        "frame_shape": list(frame_shape),
    }
    if shape is not None:
        header["shape"] = list(shape)
    if idle_timeout is not None:
        header["idle_timeout"] = float(idle_timeout)
    if ring is not None:
        header["shared_memory"] = {"ring": ring}
    if format is not None:
        header["format"] = format
    if compression is not None:
        header["compression"] = compression
    if compression_level is not None:
        header["compression_level"] = compression_level
    if chunk_shape is not None:
        header["chunk_shape"] = list(chunk_shape)
    if shard_frames is not None:
        header["shard_frames"] = shard_frames
    return header


def frames_header(
    acquisition: str,
    seq: int,
    index: int,
    count: int,
    frame_metadata: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    shm: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A frames header; ``shm`` = (offset, length) when the pixels are in the ring."""
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": "frames",
        "acquisition": acquisition,
        "seq": seq,
        "index": index,
        "count": count,
    }
    if frame_metadata is not None:
        header["frame_metadata"] = [None if m is None else dict(m) for m in frame_metadata]
    if shm is not None:
        header["shm"] = {"offset": shm[0], "length": shm[1]}
    return header


def end_header(
    kind: Literal["stop", "abort"],
    acquisition: str,
    seq: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": kind,
        "acquisition": acquisition,
        "seq": seq,
    }
    if extra:
        header.update(extra)
    return header
