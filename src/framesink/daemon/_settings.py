"""Daemon settings: defaults < TOML config file < FRAMESINK_* environment < CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ByteSize, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ..core import ExistsPolicy, StorageOptions, compression_of
from ..transport import RingLimits
from ._config_errors import ENV_PREFIX, LenientEnvSource, explain
from ._metrics import parse_address

SYSTEM_CONFIG = Path("/etc/framesink/framesink.toml")
CONFIG_ENV = "FRAMESINK_CONFIG"


class Settings(BaseSettings):
    """Everything an operator can set; see config/framesink.toml for the documented example."""

    model_config = SettingsConfigDict(
        env_prefix="FRAMESINK_", extra="forbid", validate_default=True
    )

    data_root: Path = Field(
        Path("framesink-data"), description="Folder every acquisition is written under."
    )
    bind: list[str] = Field(["tcp://127.0.0.1:5555"], description="Ingest endpoints to bind.")
    connect: list[str] = Field(
        [], description="Ingest endpoints to connect to (e.g. a camera's PUB)."
    )
    socket: Literal["sub", "pull"] = Field("sub", description="Ingest socket kind.")
    subscribe: list[str] = Field([""], description="SUB topic prefixes; '' means everything.")
    control: str = Field("tcp://127.0.0.1:5556", description="Control (REP) endpoint.")
    queue_bytes: ByteSize = Field(
        ByteSize(48 << 20),
        description=(
            "Bound on pixel bytes waiting for the disk in the daemon's memory (a shared-memory "
            "message counts 4 KiB: its pixels stay in the publisher's ring)."
        ),
    )
    receive_hwm: int = Field(4, ge=1, description="ZeroMQ receive high-water mark (messages).")
    idle_timeout: float = Field(
        60.0, gt=0, description="Seconds without a message before an acquisition times out."
    )
    max_idle_timeout: float = Field(
        86400.0, gt=0, description="Largest idle_timeout a start message may ask for."
    )
    start_timeout: float = Field(
        30.0, gt=0, description="Seconds an acquisition may stay open with nothing after its start."
    )
    max_seq_gap: int = Field(
        1_000_000, ge=1, description="Most messages a seq may skip ahead; more is rejected."
    )
    max_message_bytes: ByteSize = Field(
        ByteSize(1 << 31), description="Largest message accepted (ZMQ_MAXMSGSIZE)."
    )
    max_header_bytes: ByteSize = Field(
        ByteSize(4 << 20), description="Largest msgpack header accepted."
    )
    max_open: int = Field(16, ge=1, description="Most acquisitions open at once.")
    max_gap_bytes: ByteSize = Field(
        ByteSize(16 << 30), description="Largest gap zero-filled for one message."
    )
    min_free_bytes: ByteSize = Field(
        ByteSize(1 << 30), description="Free disk space under which acquisitions stop."
    )
    on_exists: ExistsPolicy = Field(
        ExistsPolicy.INCREMENT, description="increment | error when a folder is taken."
    )
    fsync_interval: float = Field(
        1.0, ge=0, description="Seconds between fsyncs (bounds loss on power failure)."
    )
    direct_io: bool = Field(
        True,
        description="Write pixels with O_DIRECT where possible (skips the page cache).",
    )
    format: str = Field(
        "ome-tiff", min_length=1, description="Storage format of a start that names none."
    )
    compression: str = Field(
        "none",
        description="Codec of a start that names none: none | zstd | deflate "
        "(blosc-lz4 | blosc-zstd: OME-Zarr only).",
    )
    compression_level: int | None = Field(
        None,
        description="Level of that codec (zstd 1-22, deflate 1-12); unset: the codec's "
        "fast default (1).",
    )
    chunk_shape: tuple[int, int] | None = Field(
        None,
        description="OME-Zarr: rows and columns of a frame one chunk holds, e.g. [512, 2048]; "
        "unset: whole rows, about 1 MiB a chunk.",
    )
    shard_frames: int | None = Field(
        None,
        ge=1,
        le=1 << 20,
        description="OME-Zarr: frames a shard aims to hold; unset: about 128 MiB a shard.",
    )
    live_page_names: bool = Field(
        False,
        description="With CURVE on, show acquisition names and paths on the live page and "
        "/api/status (off: opaque tokens; without CURVE names are always shown).",
    )
    recover_on_start: bool = Field(True, description="Recover interrupted acquisitions at start.")
    curve_server_key: Path | None = Field(
        None,
        description="The daemon's CURVE certificate with its secret (NAME.key_secret); "
        "with curve_clients, ingest and control accept only listed clients.",
    )
    curve_clients: Path | None = Field(
        None, description="Directory of allowed clients' public certificates (*.key)."
    )
    curve_admins: Path | None = Field(
        None,
        description="Directory of the public certificates (*.key) of clients that may stop "
        "and abort any acquisition from the control endpoint (others: only their own).",
    )
    curve_client_key: Path | None = Field(
        None, description="framesink status: this client's own certificate (NAME.key_secret)."
    )
    curve_server_public_key: Path | None = Field(
        None,
        description="framesink status: the daemon's public certificate (NAME.key); "
        "defaults to curve_server_key.",
    )
    shared_memory: bool = Field(
        True, description="Accept shared-memory rings from publishers on this host."
    )
    shared_memory_socket: Path | None = Field(
        None,
        description="Unix socket for ring registration (default: in $RUNTIME_DIRECTORY or "
        "the temporary folder, named after the daemon's pid).",
    )
    ring_receive_hwm: int = Field(
        1000,
        ge=1,
        description="ZeroMQ receive high-water mark (messages) of the socket ring publishers "
        "send their headers on (no pixels: at most max_header_bytes a part).",
    )
    max_ring_bytes: ByteSize = Field(
        ByteSize(64 << 30), description="Largest shared-memory ring a publisher may register."
    )
    max_rings: int = Field(64, ge=1, description="Most shared-memory rings registered at once.")
    max_rings_per_process: int = Field(
        8, ge=1, description="Most shared-memory rings one publisher process may register."
    )
    max_ring_total_bytes: ByteSize = Field(
        ByteSize(64 << 30), description="Most bytes all registered rings may hold together."
    )
    metrics: str = Field(
        "", description="HOST:PORT of the Prometheus metrics endpoint; empty turns it off."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("metrics")
    @classmethod
    def _metrics_address(cls, value: str) -> str:
        if value:
            parse_address(value)
        return value

    @model_validator(mode="after")
    def _curve_pair(self) -> Settings:
        if (self.curve_server_key is None) != (self.curve_clients is None):
            raise ValueError(
                "curve_server_key and curve_clients go together: set both to require "
                "CURVE authentication, or neither"
            )
        return self

    @model_validator(mode="after")
    def _known_compression(self) -> Settings:
        compression_of(self.compression, self.compression_level)
        StorageOptions.create(chunk_shape=self.chunk_shape)
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        lenient_env = LenientEnvSource(settings_cls, env_prefix=ENV_PREFIX, case_sensitive=False)
        return (init_settings, lenient_env, TomlConfigSettingsSource(settings_cls))


def config_file(explicit: str | Path | None) -> Path | None:
    """The config file to read: --config, then $FRAMESINK_CONFIG, then /etc if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` (CLI flags) win, None values are ignored."""
    path = config_file(config)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    given = {key: value for key, value in overrides.items() if value is not None}

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return Settings.model_validate(_FromFile(**given).model_dump())
    except ValidationError as exc:
        raise explain(exc, given, path) from None


def ring_limits(settings: Settings) -> RingLimits:
    """The bounds on shared-memory rings these settings give."""
    return RingLimits(
        max_ring_bytes=int(settings.max_ring_bytes),
        max_rings=settings.max_rings,
        max_rings_per_process=settings.max_rings_per_process,
        max_total_bytes=int(settings.max_ring_total_bytes),
    )
