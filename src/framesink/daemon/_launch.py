"""Running `framesink serve` as a child process: the demo, the benchmark and the tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..transport import ClientKeys, ControlClient, ControlError


def serve_command(
    data_root: Path,
    *,
    bind: Sequence[str],
    control: str,
    socket: str = "sub",
    log_level: str = "WARNING",
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line that runs `framesink serve` with this Python."""
    command = [sys.executable, "-m", "framesink", "serve", "--data-root", str(data_root)]
    for endpoint in bind:
        command += ["--bind", endpoint]
    return [*command, "--socket", socket, "--control", control, "--log-level", log_level, *extra]


def wait_until_ready(
    control: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    keys: ClientKeys | None = None,
) -> None:
    """Wait for the daemon to answer ping; raise RuntimeError if it died or never answered."""
    client = ControlClient(control, timeout=1.0, keys=keys)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with code {process.returncode}")
        try:
            client.ping(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
        except ControlError:
            continue
        return
    raise RuntimeError(f"the daemon did not answer on {control} within {timeout:g} s")
