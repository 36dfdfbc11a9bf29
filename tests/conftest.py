"""Shared fixtures and readers used across the test suite."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from framesink.control import ControlError, request
from framesink.demo import serve_command


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


def read_metadata(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "metadata.json").read_text())
    return document


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


# -- a real daemon process ---------------------------------------------------------------


READY_TIMEOUT = 30.0


@dataclass
class DaemonProcess:
    """A `framesink serve` subprocess with its endpoints and log."""

    process: subprocess.Popen[bytes]
    data_root: Path
    control: str
    log_path: Path
    ingest: list[str] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return request(self.control, {"cmd": "status"}, timeout=5.0)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll the status until ``predicate`` holds; fail with the last status and log."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(
            f"condition not met in {timeout} s; status: {status}\nlog:\n{self.log()}"
        )

    def wait_finished(self, acquisition: str, timeout: float = 20.0) -> dict[str, Any]:
        status = self.wait_for(
            lambda s: any(
                a["acquisition"] == acquisition and a["state"] != "open" for a in s["acquisitions"]
            ),
            timeout,
        )
        return next(a for a in status["acquisitions"] if a["acquisition"] == acquisition)

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_ready(process: subprocess.Popen[bytes], control: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"daemon exited with {process.returncode}:\n{log_path.read_text()}"
            )
        try:
            if request(control, {"cmd": "ping"}, timeout=0.5)["ok"]:
                return
        except ControlError:
            continue
    raise AssertionError(f"daemon not ready:\n{log_path.read_text()}")


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start `framesink serve` processes; every one is stopped at teardown."""
    started: list[DaemonProcess] = []

    def start(
        *args: str,
        data_root: Path | None = None,
        env: dict[str, str] | None = None,
        bind: list[str] | None = None,
        wait: bool = True,
        socket: str = "sub",
        preexec_fn: Callable[[], None] | None = None,
    ) -> DaemonProcess:
        number = len(started)
        root = data_root or tmp_path / f"data{number}"
        root.mkdir(parents=True, exist_ok=True)
        control = f"ipc://{tmp_path}/control{number}"
        binds = ["tcp://127.0.0.1:*"] if bind is None else bind
        command = serve_command(
            root, bind=binds, control=control, socket=socket, log_level="DEBUG", extra=args
        )
        log_path = tmp_path / f"daemon{number}.log"
        environment = {**os.environ, "FRAMESINK_CONFIG": "", **(env or {})}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
                preexec_fn=preexec_fn,  # noqa: PLW1509 - only resource limits, set before exec
            )
        daemon = DaemonProcess(process, root, control, log_path)
        started.append(daemon)
        if wait:
            wait_ready(process, control, log_path)
            daemon.ingest = daemon.status()["ingest"]
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)


def framesink_command(*args: str) -> list[str]:
    """The installed `framesink` console script (next to this Python, else on PATH)."""
    script = Path(sys.executable).with_name("framesink")
    found = str(script) if script.exists() else shutil.which("framesink")
    assert found, "the `framesink` console script is not installed (pip install .)"
    return [found, *args]


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
