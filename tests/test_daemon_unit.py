"""The daemon's receive path, driven in-process where a fault has to be injected."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from framesink.daemon import Daemon
from framesink.settings import load_settings
from framesink.wire import end_header, frames_header, pack_header, start_header


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A PULL daemon that is never run: tests feed ``_handle`` directly."""
    monkeypatch.delenv("FRAMESINK_CONFIG", raising=False)
    instance = Daemon(load_settings(None, data_root=tmp_path, socket="pull"))
    yield instance
    instance._context.term()


def _handle(daemon: Daemon, header: dict[str, object], payload: bytes | None = None) -> None:
    parts = [memoryview(b"t"), memoryview(pack_header(header))]
    if payload is not None:
        parts.append(memoryview(payload))
    daemon._handle(parts)


START = start_header(
    "a",
    metadata={"axes": "TYX"},
    output_path="p",
    output_name="n",
    dtype="uint8",
    frame_shape=[2, 2],
)


def test_an_internal_error_rejects_the_message_and_the_daemon_goes_on(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_route(*_args: object) -> list[object]:
        raise RuntimeError("a bug in routing")

    monkeypatch.setattr(daemon.router, "route", broken_route)
    _handle(daemon, START)
    counters = daemon.counters.snapshot()
    assert counters["bad_messages"] == 1
    assert counters["rejected_by_reason"] == {"internal_error": 1}
    assert "a bug in routing" in daemon.counters.recent_errors[-1]["detail"]


def test_a_session_that_failed_before_its_stop_still_ends(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer fails while the stop is already on its way: the session must still end.

    (Found as a flaky system test: the stop removed the acquisition from the router first,
    so nothing ever told the failed session to finish, and shutdown waited for it.)
    """
    _handle(daemon, START)
    session = daemon.sessions["a"]

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(session.writer, "write_batch", disk_full)
    _handle(daemon, frames_header("a", 1, 0, 1), bytes(4))
    deadline = time.monotonic() + 10
    while not session.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.failed
    _handle(daemon, end_header("stop", "a", 2))
    assert session.join(10), "the failed session never ended"
    daemon._reap()
    assert daemon.counters.snapshot()["acquisitions_failed"] == 1
    assert "a" not in daemon.sessions
