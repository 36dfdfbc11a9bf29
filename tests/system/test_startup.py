"""Start-up failures of the real `framesink serve`: one line naming the cause and the
setting, exit 1, within seconds, no traceback, and nothing left behind (issue: operating)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from framesink import ControlClient
from framesink.daemon import serve_command, wait_until_ready

from ..helpers import DaemonProcess, run_framesink

StartDaemon = Callable[..., DaemonProcess]
BOUND_S = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(root: Path, *args: str) -> tuple[int, list[str], str, float]:
    began = time.monotonic()
    result = run_framesink(
        "serve", "--data-root", str(root), *args, env={"FRAMESINK_CONFIG": ""}, timeout=BOUND_S
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, lines, result.stderr, time.monotonic() - began


def _check_one_line(code: int, lines: list[str], stderr: str, *words: str) -> None:
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert "stopped" not in stderr, "nothing started, so nothing stopped"
    assert len(lines) == 1, stderr
    assert lines[0].startswith("framesink: cannot start: ")
    for word in words:
        assert word in lines[0]


def test_a_second_daemon_on_the_same_control_endpoint_says_so_and_exits(
    tmp_path: Path,
) -> None:
    """It used to print nothing and never exit."""
    control = f"tcp://127.0.0.1:{_free_port()}"
    command = serve_command(tmp_path / "first", bind=["tcp://127.0.0.1:*"], control=control)
    with subprocess.Popen(command, stderr=subprocess.DEVNULL, env=_no_config()) as first:
        try:
            wait_until_ready(control, first, 30)
            code, lines, stderr, took = _serve(
                tmp_path / "second", "--bind", "tcp://127.0.0.1:*", "--control", control
            )
            _check_one_line(code, lines, stderr, control, "--control", "Address already in use")
            assert took < 10
            assert ControlClient(control).status().state == "running", "the first one goes on"
        finally:
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0


def _no_config() -> dict[str, str]:
    return {**os.environ, "FRAMESINK_CONFIG": ""}


@pytest.mark.parametrize(
    ("bind", "words"),
    [
        ("taken", ["Address already in use", "--bind"]),
        ("notanendpoint", ["notanendpoint", "tcp://HOST:PORT", "--bind"]),
    ],
)
def test_an_ingest_endpoint_that_cannot_be_opened(
    tmp_path: Path, bind: str, words: list[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        endpoint = f"tcp://127.0.0.1:{holder.getsockname()[1]}" if bind == "taken" else bind
        code, lines, stderr, _took = _serve(
            tmp_path / "root", "--bind", endpoint, "--control", f"ipc://{tmp_path}/control"
        )
    _check_one_line(code, lines, stderr, *words)
    assert not Path(f"{tmp_path}/control").exists(), "the control socket is gone again"


def test_a_taken_metrics_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        code, lines, stderr, _took = _serve(
            tmp_path / "root",
            "--bind",
            "tcp://127.0.0.1:*",
            "--control",
            f"ipc://{tmp_path}/control",
            "--metrics",
            address,
        )
    _check_one_line(code, lines, stderr, address, "--metrics", "Address already in use")


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_a_data_root_that_cannot_be_created(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("")
    root = Path("/proc/framesink-test") if where == "proc" else tmp_path / "file" / "root"
    code, lines, stderr, _took = _serve(
        root, "--bind", "tcp://127.0.0.1:*", "--control", f"ipc://{tmp_path}/control"
    )
    _check_one_line(code, lines, stderr, str(root), "--data-root")


def test_a_daemon_stopped_by_sigterm_leaves_no_socket_files(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Every run left its ring ingest socket in /tmp."""
    daemon = start_daemon(socket="pull", bind=[f"ipc://{tmp_path}/ingest"])
    status = daemon.status()
    assert status.shared_memory is not None
    assert status.shared_memory_ingest is not None
    files = [
        Path(status.shared_memory),
        Path(status.shared_memory_ingest.removeprefix("ipc://")),
        tmp_path / "ingest",
        Path(daemon.control.removeprefix("ipc://")),
    ]
    assert all(path.exists() for path in files)
    assert daemon.stop() == 0
    assert [path for path in files if path.exists()] == []
