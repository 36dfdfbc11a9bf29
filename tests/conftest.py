"""Fixtures: a data root, real daemon processes, and an in-process daemon with real sockets.

Every daemon, thread and socket a fixture starts is stopped at teardown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from framesink.core import SinkFactory
from framesink.daemon import Daemon, load_settings
from framesink.formats import open_sink
from framesink.transport import ControlClient, ControlError

from .helpers import DaemonProcess, launch_daemon


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start `framesink serve` processes; every one is stopped at teardown."""
    started: list[DaemonProcess] = []

    def start(*args: str, **options: Any) -> DaemonProcess:
        daemon = launch_daemon(tmp_path, len(started), *args, **options)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)


@dataclass
class InProcessDaemon:
    """A Daemon running in a thread of the test, on ipc endpoints."""

    daemon: Daemon
    thread: threading.Thread
    ingest: str
    client: ControlClient
    data_root: Path


@pytest.fixture
def in_process_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., InProcessDaemon]]:
    """Run a PULL daemon in a thread with the given sink factory; stopped at teardown."""
    monkeypatch.delenv("FRAMESINK_CONFIG", raising=False)
    running: list[InProcessDaemon] = []

    def start(sink_factory: SinkFactory = open_sink, **settings: Any) -> InProcessDaemon:
        number = len(running)
        ingest, control = f"ipc://{tmp_path}/in{number}", f"ipc://{tmp_path}/ctl{number}"
        root = tmp_path / f"root{number}"
        options: dict[str, Any] = {"socket": "pull", "bind": [ingest], "control": control}
        daemon = Daemon(
            load_settings(None, data_root=root, **(options | settings)),
            sink_factory=sink_factory,
        )
        thread = threading.Thread(target=daemon.run, name="daemon-under-test")
        thread.start()
        client = ControlClient(control, timeout=2.0)
        started = InProcessDaemon(daemon, thread, ingest, client, root)
        running.append(started)
        for _ in range(15):
            try:
                client.ping()
                return started
            except ControlError:
                assert thread.is_alive(), "the daemon thread ended before it was ready"
        raise AssertionError("the in-process daemon never answered ping")

    yield start
    for started in running:
        started.daemon.request_stop()
        started.thread.join(60)
        assert not started.thread.is_alive(), "the in-process daemon did not stop"
