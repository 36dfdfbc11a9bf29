"""The daemon in a thread, on real ipc sockets, with a fault injected through its sink seam."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from framesink import Publisher
from framesink.core import FrameChunk, FrameSink, SinkSpec

from ..conftest import InProcessDaemon
from ..helpers import (
    DelegatingSink,
    FullDiskSink,
    end_parts,
    frames_parts,
    pattern,
    read_tiff,
    start_parts,
    start_tyx,
    wait_for_status,
)

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


class GatedSink(DelegatingSink):
    """Writes wait until the gate opens: frames pile up in the daemon meanwhile."""

    gate = threading.Event()

    def write(self, chunks: Sequence[FrameChunk]) -> None:
        assert self.gate.wait(30), "the test never opened the gate"
        super().write(chunks)


def test_frames_in_a_ring_do_not_count_their_pixels_against_queue_bytes(
    in_process_daemon: StartInProcess, tmp_path: Path
) -> None:
    """queue_bytes bounds the daemon's own memory; a ring's pixels are the publisher's.
    Counting them made a shared-memory publisher wait on a queue of a few frames."""
    GatedSink.gate.clear()
    running = in_process_daemon(
        sink_factory=GatedSink,
        queue_bytes="1MiB",
        shared_memory_socket=str(tmp_path / "rings"),
    )
    frames = pattern(40, (256, 256), "uint16")  # 5 MiB of pixels, 5x queue_bytes
    control = running.client.endpoint
    with Publisher(running.ingest, kind="push", control=control, shared_memory=16 << 20) as pub:
        run = start_tyx(pub, "ring", dtype="uint16", frame_shape=(256, 256))
        for frame in frames:
            run.send(frame)
        queued = wait_for_status(running.client, lambda s: s.counters.frames_received == 40)
        assert queued.counters.frames_lost_overload == 0
        GatedSink.gate.set()
        entry = run.stop(wait=30)
    assert entry is not None
    assert (entry.frames_written, entry.frames_missing) == (40, 0)
    np.testing.assert_array_equal(read_tiff(Path(entry.path))[1], frames)
