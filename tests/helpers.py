"""The one home of the test helpers: frames and files, wire messages, daemons, sinks.

(The bad-input tests build their headers by hand on purpose: they bypass the encoder.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import tifffile

from framesink.core import (
    AcquisitionEntry,
    AcquisitionRecord,
    DaemonStatus,
    FinishReason,
    FrameChunk,
    SinkProgress,
    SinkSpec,
    end_header,
    frames_header,
    pack_header,
    start_header,
)
from framesink.daemon import serve_command
from framesink.formats import open_sink
from framesink.transport import (
    ClientKeys,
    ControlClient,
    ControlError,
    PublishedAcquisition,
    Publisher,
)

# -- frames and files ---------------------------------------------------------------------


def pattern(
    count: int, frame_shape: tuple[int, ...], dtype: str, start: int = 0
) -> np.ndarray[Any, Any]:
    """Deterministic frames whose pixels depend on the frame index (pixel-exact checks)."""
    frames = np.empty((count, *frame_shape), dtype=dtype)
    grid = np.indices(frame_shape).sum(axis=0)
    for offset in range(count):
        frames[offset] = ((grid + 7 * (start + offset)) % 120).astype(dtype)
    return frames


def read_tiff(path: Path) -> tuple[str, np.ndarray[Any, Any], str]:
    """Return (series kind, pixels, OME-XML) of a finished file."""
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        assert len(tiff.series) == 1, f"{path} has {len(tiff.series)} series"
        return series.kind, series.asarray(), tiff.pages[0].description  # type: ignore[union-attr]


def validate_ome(xml: str) -> Any:
    """Parse and validate OME-XML against the 2016-06 schema; return the OME object."""
    from ome_types import from_xml

    return from_xml(xml, validate=True)


def read_ome_zarr(path: Path) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    """An OME-Zarr's full-resolution pixels and its group attributes, after checking
    that zarr-python and tensorstore read the same pixels and ome-zarr-models
    validates the group (NGFF 0.5)."""
    import tensorstore
    import zarr
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05 import Image

    group = zarr.open_group(path, mode="r")
    assert isinstance(open_ome_zarr(group), Image)
    array = group["0"]
    assert isinstance(array, zarr.Array)
    pixels = np.asarray(array[...])
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
    through_tensorstore = tensorstore.open(spec, read=True).result().read().result()
    np.testing.assert_array_equal(through_tensorstore, pixels)
    return pixels, dict(group.attrs)


def read_metadata(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "metadata.json").read_text())
    return document


# -- wire messages (through the encoder) ----------------------------------------------------


def start_parts(
    acquisition: str = "a",
    *,
    axes: str = "TYX",
    dtype: str = "uint16",
    frame_shape: Sequence[int] = (4, 4),
    shape: Sequence[int | None] | None = None,
    output_path: str = "p",
    output_name: str = "n",
    metadata: Mapping[str, Any] | None = None,
) -> list[bytes]:
    header = start_header(
        acquisition,
        metadata={"axes": axes, **(metadata or {})},
        output_path=output_path,
        output_name=output_name,
        dtype=dtype,
        frame_shape=frame_shape,
        shape=shape,
    )
    return [b"t", pack_header(header)]


def frames_parts(
    acquisition: str,
    seq: int,
    index: int,
    count: int,
    *,
    frame_bytes: int,
    payload: bytes | None = None,
) -> list[bytes]:
    """A frames message; by default frame ``i`` of the message is all bytes ``i``."""
    pixels = b"".join(bytes([i % 256]) * frame_bytes for i in range(count))
    header = frames_header(acquisition, seq, index, count)
    return [b"t", pack_header(header), pixels if payload is None else payload]


def end_parts(
    kind: Literal["stop", "abort"],
    acquisition: str,
    seq: int,
    extra: Mapping[str, Any] | None = None,
) -> list[bytes]:
    return [b"t", pack_header(end_header(kind, acquisition, seq, extra))]


# -- publishing ---------------------------------------------------------------------------


def start_tyx(
    publisher: Publisher,
    acquisition: str,
    *,
    dtype: str,
    frame_shape: tuple[int, ...],
    output_path: str | None = None,
    output_name: str | None = None,
    subscriber_timeout: float = 10.0,
) -> PublishedAcquisition:
    """Start a plain time series (axes TYX, no other metadata) on ``publisher``, written
    to ``<output_path>/<output_name>`` (both default to the acquisition id)."""
    return publisher.start(
        acquisition,
        {"axes": "TYX"},
        output_path=output_path or acquisition,
        output_name=output_name or acquisition,
        dtype=dtype,
        frame_shape=frame_shape,
        subscriber_timeout=subscriber_timeout,
    )


# -- waiting on a daemon's status ------------------------------------------------------------


def wait_for_status(
    client: ControlClient,
    predicate: Callable[[DaemonStatus], bool],
    timeout: float = 20.0,
    log: Callable[[], str] = str,
) -> DaemonStatus:
    """Poll ``client`` until ``predicate`` holds; fail with the last status (and log)."""
    try:
        return client.wait_for_status(predicate, timeout)
    except ControlError as exc:
        raise AssertionError(f"{exc}; status: {client.status()}\nlog:\n{log()}") from None


def wait_finished(
    client: ControlClient, acquisition: str, timeout: float = 20.0, log: Callable[[], str] = str
) -> AcquisitionEntry:
    """The entry of ``acquisition`` once it is no longer open."""
    try:
        return client.wait_for_acquisition(acquisition, timeout)
    except ControlError as exc:
        raise AssertionError(f"{exc}; status: {client.status()}\nlog:\n{log()}") from None


# -- a real daemon process -------------------------------------------------------------------

READY_TIMEOUT = 30.0


@dataclass
class DaemonProcess:
    """A `framesink serve` subprocess with its endpoints and log."""

    process: subprocess.Popen[bytes]
    data_root: Path
    control: str
    log_path: Path
    ingest: list[str] = field(default_factory=list)
    keys: ClientKeys | None = None

    @property
    def client(self) -> ControlClient:
        return ControlClient(self.control, timeout=5.0, keys=self.keys)

    def status(self) -> DaemonStatus:
        return self.client.status()

    def wait_for(
        self, predicate: Callable[[DaemonStatus], bool], timeout: float = 20.0
    ) -> DaemonStatus:
        """Poll the status until ``predicate`` holds; fail with the last status and log."""
        return wait_for_status(self.client, predicate, timeout, self.log)

    def wait_finished(self, acquisition: str, timeout: float = 20.0) -> AcquisitionEntry:
        return wait_finished(self.client, acquisition, timeout, self.log)

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def launch_daemon(
    workdir: Path,
    number: int,
    *args: str,
    data_root: Path | None = None,
    env: dict[str, str] | None = None,
    bind: list[str] | None = None,
    wait: bool = True,
    socket: str = "sub",
    preexec_fn: Callable[[], None] | None = None,
    keys: ClientKeys | None = None,
) -> DaemonProcess:
    """Start `framesink serve` with its log in ``workdir``; wait until it answers ping."""
    root = data_root or workdir / f"data{number}"
    root.mkdir(parents=True, exist_ok=True)
    control = f"ipc://{workdir}/control{number}"
    binds = ["tcp://127.0.0.1:*"] if bind is None else bind
    command = serve_command(
        root, bind=binds, control=control, socket=socket, log_level="DEBUG", extra=args
    )
    log_path = workdir / f"daemon{number}.log"
    environment = {**os.environ, "FRAMESINK_CONFIG": "", **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only resource limits, set before exec
        )
    daemon = DaemonProcess(process, root, control, log_path, keys=keys)
    if wait:
        wait_ready(process, control, log_path, keys)
        daemon.ingest = daemon.status().ingest
    return daemon


def wait_ready(
    process: subprocess.Popen[bytes], control: str, log_path: Path, keys: ClientKeys | None = None
) -> None:
    client = ControlClient(control, keys=keys)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"daemon exited with {process.returncode}:\n{log_path.read_text()}"
            )
        try:
            client.ping(timeout=0.5)
        except ControlError:
            continue
        return
    raise AssertionError(f"daemon not ready:\n{log_path.read_text()}")


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    """A real tmpfs at ``mount_point`` (``options`` as for mount -o); skips without root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=30)


def framesink_command(*args: str) -> list[str]:
    """The installed `framesink` console script (next to this Python, else on PATH)."""
    script = Path(sys.executable).with_name("framesink")
    found = str(script) if script.exists() else shutil.which("framesink")
    assert found, "the `framesink` console script is not installed (pip install .)"
    return [found, *args]


def run_fake_camera(
    daemon: DaemonProcess, *args: str, kind: str = "push", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run scripts/fake_camera.py against ``daemon`` (its ingest and control endpoints)."""
    script = Path(__file__).parents[1] / "scripts" / "fake_camera.py"
    endpoints = ["--endpoint", daemon.ingest[0], "--kind", kind, "--control", daemon.control]
    return subprocess.run(
        [sys.executable, str(script), *endpoints, "--rate", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_framesink(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the `framesink` command to completion; output captured as text, never raises."""
    return subprocess.run(
        framesink_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


# -- sinks injected through the daemon's seam ------------------------------------------------


class DelegatingSink:
    """A FrameSink that hands everything to a real TIFF sink; tests override one step."""

    def __init__(self, spec: SinkSpec) -> None:
        self.inner = open_sink(spec)

    def prepare(self) -> None:
        self.inner.prepare()

    def write(self, chunks: Sequence[FrameChunk]) -> None:
        self.inner.write(chunks)

    def skip(self, count: int) -> None:
        self.inner.skip(count)

    def drop(self, count: int) -> None:
        self.inner.drop(count)

    def lose_messages(self, count: int) -> None:
        self.inner.lose_messages(count)

    def finalize(
        self,
        reason: FinishReason,
        *,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AcquisitionRecord:
        return self.inner.finalize(reason, error=error, metadata=metadata)

    def progress(self) -> SinkProgress:
        return self.inner.progress()


class GatedSink(DelegatingSink):
    """Holds its first write until released, so that more items queue up behind it."""

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, chunks: Sequence[FrameChunk]) -> None:
        self.batch_sizes.append(len(chunks))
        self.entered.set()
        assert self.release.wait(10)
        super().write(chunks)


class FullDiskSink(DelegatingSink):
    """The file may grow by ``room`` frames, then the disk is full."""

    def __init__(self, spec: SinkSpec, room: int) -> None:
        super().__init__(spec)
        self.room = room

    def write(self, chunks: Sequence[FrameChunk]) -> None:
        in_file = self.inner.writer.frames_in_file
        if in_file + sum(len(chunk) for chunk in chunks) > self.room:
            stacked = np.concatenate([chunk.frames for chunk in chunks])
            super().write([FrameChunk(stacked[: self.room - in_file])])
            raise OSError(28, "No space left on device")
        super().write(chunks)
