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

from ..helpers import DaemonProcess, mounted_tmpfs, run_framesink

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


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--idle-timeout", "-5"], ["setting idle_timeout = -5.0", "flag --idle-timeout"]),
        (["--metrics", "9464"], ["setting metrics", "flag --metrics", "HOST:PORT"]),
        (["--log-level", "verbose"], ["setting log_level", "'DEBUG', 'INFO'"]),
        (["--queue-bytes", "lots"], ["setting queue_bytes", "flag --queue-bytes"]),
        (["--curve-server-key", "/tmp/x"], ["curve_server_key and curve_clients go together"]),
    ],
)
def test_configuration_errors_are_in_framesinks_words(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    """Operating, item 4: pydantic's internals ("1 validation error for _FromFile")."""
    result = run_framesink(
        "serve", "--data-root", str(tmp_path), *args, env={"FRAMESINK_CONFIG": ""}
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "pydantic" not in result.stderr
    assert "_FromFile" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("framesink: bad configuration: ")
    for word in words:
        assert word in line


def test_a_bad_value_in_the_config_file_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "framesink.toml"
    config.write_text(f'data_root = "{tmp_path}"\n\nidle_timeout = -3\n')
    result = run_framesink("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"setting idle_timeout = -3 ({config}, line 3)" in result.stderr


def test_a_plain_string_in_a_list_valued_environment_variable_is_one_element(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framesink.daemon import load_settings

    monkeypatch.setenv("FRAMESINK_CONFIG", "")
    monkeypatch.setenv("FRAMESINK_BIND", "tcp://127.0.0.1:5999")
    assert load_settings(data_root=tmp_path).bind == ["tcp://127.0.0.1:5999"]
    monkeypatch.setenv("FRAMESINK_BIND", '["tcp://127.0.0.1:5998", "ipc:///tmp/x"]')
    assert load_settings(data_root=tmp_path).bind == ["tcp://127.0.0.1:5998", "ipc:///tmp/x"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo", "--dtype", "float16"], "framesink demo: error: argument --dtype: invalid choice"),
        (["demo", "--frames", "0"], "framesink demo: error: argument --frames: must be at least 1"),
        (["serve", "--bogus"], "framesink serve: error: unrecognized arguments: --bogus"),
        (["status", "--bogus"], "framesink status: error: unrecognized arguments: --bogus"),
    ],
)
def test_command_line_errors_name_the_subcommand(args: list[str], expected: str) -> None:
    """Operating, item 8: a traceback, a silent exit 1, or the top-level usage."""
    result = run_framesink(*args, timeout=BOUND_S)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(expected)
    assert result.stderr.startswith(f"usage: framesink {args[0]}")


def test_every_option_says_what_it_is() -> None:
    """Operating, item 8: options without help text or default."""
    import argparse

    from framesink.cli._main import _parser

    _, subcommands = _parser()
    silent = [
        f"{name} {'/'.join(action.option_strings)}"
        for name, parser in subcommands.items()
        for action in parser._actions
        if action.option_strings
        and not isinstance(action, argparse._HelpAction)
        and not action.help
    ]
    assert silent == []


def test_a_data_root_that_cannot_be_written(tmp_path: Path) -> None:
    """Operating, item 3: an existing, unwritable data root reported ready, and the first
    start was refused. A read-only filesystem refuses even root."""
    with mounted_tmpfs(tmp_path / "readonly", "ro,size=1m") as root:
        code, lines, stderr, _took = _serve(
            root, "--bind", "tcp://127.0.0.1:*", "--control", f"ipc://{tmp_path}/control"
        )
    _check_one_line(code, lines, stderr, str(root), "is not writable", "Read-only file system")
