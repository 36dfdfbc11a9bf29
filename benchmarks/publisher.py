"""The publisher child process: connect, say ``ready``, wait for ``go``, send, stop.

Started by the runner as ``python -m benchmarks.publisher JOB`` (JOB is JSON), so that
the camera side runs in its own process as it would in a laboratory.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from framesink import ControlClient, Publisher
from framesink.transport import SharedRing

from .cases import POOL, RAW_SLOT, frame_pool, frame_stack
from .compressed import realistic_pool

REPOSITORY = Path(__file__).parents[1]
DELIVERY_TIMEOUT_S = 600.0


def start(job: dict[str, Any]) -> subprocess.Popen[str]:
    """The publisher process, connected and waiting for :func:`go`."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.publisher", json.dumps(job)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise RuntimeError("the publisher did not start")
    return child


def go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


def publish(job: dict[str, Any]) -> None:
    """Send every frame of the job, stop, and wait until the daemon's files are final."""
    if job["kind"] == "raw":
        publish_raw(job)
        return
    if job["kind"] == "raw-shm":
        publish_raw_shm(job)
        return
    hwm = 1000 if job["kind"] == "push" else 100_000
    with Publisher(
        job["endpoint"],
        kind=job["kind"],
        high_water_mark=hwm,
        control=job["control"],
        shared_memory=job.get("shared_memory"),
    ) as publisher:
        messages = _messages(job)
        _ready()
        acquisition = publisher.start(
            "bench",
            {"axes": "TYX"},
            output_path="bench",
            output_name="bench",
            dtype="uint16",
            frame_shape=tuple(job["shape"]),
        )
        for frames in messages:
            acquisition.send(frames)
        if job["kind"] == "pub":
            _wait_until_received(ControlClient(job["control"]), acquisition.seq + 1)
        acquisition.stop(wait=DELIVERY_TIMEOUT_S)


def _wait_until_received(client: ControlClient, messages: int) -> None:
    """PUB has no backpressure: the stop goes once the daemon has counted every message."""
    client.wait_for_status(lambda s: s.counters.messages >= messages, DELIVERY_TIMEOUT_S)


def publish_raw(job: dict[str, Any]) -> None:
    """The same frames as plain two-part PUSH messages, for the minimal pipeline."""
    messages = _messages(job)
    with _raw_push(job["endpoint"]) as socket:
        _ready()
        for frames in messages:
            socket.send_multipart([b"f", frames.data], copy=False)


def publish_raw_shm(job: dict[str, Any]) -> None:
    """The same frames through framesink's ring, each slot named by a raw 16-byte
    message (offset, length), for the minimal shm pipeline; waits for every release."""
    ring = SharedRing(int(job["ring_bytes"]))
    ring.register(job["ring_socket"])
    messages = _messages(job)
    with _raw_push(job["endpoint"]) as socket:
        _ready()
        for frames in messages:
            offset, slot = ring.slot(frames.nbytes, DELIVERY_TIMEOUT_S)
            slot[:] = frames.reshape(-1).view(np.uint8)
            socket.send_multipart([b"f", RAW_SLOT.pack(offset, frames.nbytes)])
        while ring.lent:
            ring.collect_releases(DELIVERY_TIMEOUT_S)
    ring.close()


def _messages(job: dict[str, Any]) -> Iterator[np.ndarray[Any, Any]]:
    """The job's frames, message by message: ``chunk`` frames each, or single frames.

    The frames are made here, before the timed run starts (realistic ones take seconds).
    """
    shape, chunk, count = (int(job["shape"][0]), int(job["shape"][1])), job["chunk"], job["count"]
    pool, stack = frame_pool(shape), frame_stack(shape, chunk)
    if job.get("frames") == "realistic":
        pool = stack = realistic_pool(shape)
    return (
        stack[: min(chunk, count - first)] if chunk > 1 else pool[first % POOL]
        for first in range(0, count, chunk)
    )


@contextlib.contextmanager
def _raw_push(endpoint: str) -> Iterator[zmq.Socket[Any]]:
    """A plain PUSH socket; on leaving, every message is delivered before it closes."""
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.connect(endpoint)
    try:
        yield socket
    finally:
        socket.close(linger=-1)
        context.term()


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    publish(json.loads(sys.argv[1]))
