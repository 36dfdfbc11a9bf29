"""The daemon in a thread, on real ipc sockets, with a fault injected through its sink seam."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from framesink.core import FrameSink, SinkSpec

from ..conftest import InProcessDaemon
from ..helpers import FullDiskSink, end_parts, frames_parts, start_parts, wait_for_status

StartInProcess = Callable[..., InProcessDaemon]


def _send(endpoint: str, *messages: list[bytes]) -> None:
    context: zmq.Context[Any] = zmq.Context()
    try:
        with context.socket(zmq.PUSH) as push:
            push.setsockopt(zmq.LINGER, 5000)
            push.setsockopt(zmq.SNDTIMEO, 5000)
            push.connect(endpoint)
            for parts in messages:
                push.send_multipart(parts)
    finally:
        context.term()


class BrokenSink:
    """A sink with a bug: preparing it raises something no sink should raise."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec

    def prepare(self) -> None:
        raise RuntimeError("a bug in the sink")


def _broken(spec: SinkSpec) -> FrameSink:
    return BrokenSink(spec)  # type: ignore[return-value]


def test_an_internal_error_rejects_the_message_and_the_daemon_goes_on(
    in_process_daemon: StartInProcess,
) -> None:
    running = in_process_daemon(sink_factory=_broken)
    _send(running.ingest, start_parts("a", dtype="uint8", frame_shape=(2, 2)))
    status = wait_for_status(running.client, lambda s: s.counters.messages == 1)
    assert status.counters.bad_messages == 1
    assert status.counters.rejected_by_reason == {"internal_error": 1}
    assert "a bug in the sink" in status.recent_errors[-1].detail
    _send(running.ingest, frames_parts("a", 1, 0, 1, frame_bytes=4))
    later = wait_for_status(running.client, lambda s: s.counters.messages == 2)
    assert later.counters.late_messages == 1, "frames of the refused start must be counted"
    assert running.client.ping()


def test_a_session_that_failed_before_its_stop_still_ends(
    in_process_daemon: StartInProcess,
) -> None:
    """The writer fails while the stop is already on its way: the session must still end.

    (Found as a flaky system test: the stop removed the acquisition from the router first,
    so nothing ever told the failed session to finish, and shutdown waited for it.)
    """
    running = in_process_daemon(sink_factory=lambda spec: FullDiskSink(spec, room=0))
    _send(
        running.ingest,
        start_parts("a", dtype="uint8", frame_shape=(2, 2)),
        frames_parts("a", 1, 0, 1, frame_bytes=4),
    )
    wait_for_status(running.client, lambda s: bool(s.acquisitions and s.acquisitions[0].error))
    _send(running.ingest, end_parts("stop", "a", 2))
    status = wait_for_status(running.client, lambda s: s.counters.acquisitions_failed == 1)
    (entry,) = status.acquisitions
    assert (entry.state, entry.reason) == ("failed", "error")
    assert "No space left" in (entry.error or "")
