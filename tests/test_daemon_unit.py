"""The daemon's receive path, driven in-process where a fault has to be injected."""

from __future__ import annotations

from pathlib import Path

import pytest

from framesink.daemon import Daemon
from framesink.settings import load_settings
from framesink.wire import pack_header, start_header


def test_an_internal_error_rejects_the_message_and_the_daemon_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAMESINK_CONFIG", raising=False)
    daemon = Daemon(load_settings(None, data_root=tmp_path))

    def broken_route(*_args: object) -> list[object]:
        raise RuntimeError("a bug in routing")

    monkeypatch.setattr(daemon.router, "route", broken_route)
    header = start_header(
        "a",
        metadata={"axes": "TYX"},
        output_path="p",
        output_name="n",
        dtype="uint8",
        frame_shape=[2, 2],
    )
    daemon._handle([memoryview(b"t"), memoryview(pack_header(header))])
    counters = daemon.counters.snapshot()
    assert counters["bad_messages"] == 1
    assert counters["rejected_by_reason"] == {"internal_error": 1}
    assert "a bug in routing" in daemon.counters.recent_errors[-1]["detail"]
    daemon._context.term()
