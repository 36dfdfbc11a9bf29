"""The publisher child process: connect, say ``ready``, wait for ``go``, send, stop.

Started by the runner as ``python -m benchmarks.publisher JOB`` (JOB is JSON), so that
the camera side runs in its own process as it would in a laboratory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from framesink import ControlClient, Publisher
from framesink.transport import SharedRing

from .cases import POOL, RAW_SLOT, frame_pool, frame_stack

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
    height, width = job["shape"]
    chunk, count = job["chunk"], job["count"]
    if job["kind"] == "raw":
        publish_raw(job)
        return
    if job["kind"] == "raw-shm":
        publish_raw_shm(job)
        return
    pool, stack = frame_pool((height, width)), frame_stack((height, width), chunk)
    hwm = 1000 if job["kind"] == "push" else 100_000
    with Publisher(
        job["endpoint"],
        kind=job["kind"],
        high_water_mark=hwm,
        control=job["control"],
        shared_memory=job.get("shared_memory"),
    ) as publisher:
        _ready()
        acquisition = publisher.start(
            "bench",
            {"axes": "TYX"},
            output_path="bench",
            output_name="bench",
            dtype="uint16",
            frame_shape=(height, width),
        )
        for first in range(0, count, chunk):
            size = min(chunk, count - first)
            acquisition.send(stack[:size] if chunk > 1 else pool[first % POOL])
        if job["kind"] == "pub":
            _wait_until_received(ControlClient(job["control"]), acquisition.seq + 1)
        acquisition.stop(wait=DELIVERY_TIMEOUT_S)


def _wait_until_received(client: ControlClient, messages: int) -> None:
    """PUB has no backpressure: the stop goes once the daemon has counted every message."""
    client.wait_for_status(lambda s: s.counters.messages >= messages, DELIVERY_TIMEOUT_S)


def publish_raw(job: dict[str, Any]) -> None:
    """The same frames as plain two-part PUSH messages, for the minimal pipeline."""
    shape, chunk = (int(job["shape"][0]), int(job["shape"][1])), int(job["chunk"])
    pool, stack = frame_pool(shape), frame_stack(shape, chunk)
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.connect(job["endpoint"])
    _ready()
    for first in range(0, job["count"], chunk):
        size = min(chunk, job["count"] - first)
        socket.send_multipart([b"f", stack[:size] if chunk > 1 else pool[first % POOL]], copy=False)
    socket.close(linger=-1)
    context.term()


def publish_raw_shm(job: dict[str, Any]) -> None:
    """The same frames through framesink's ring, each slot named by a raw 16-byte
    message (offset, length), for the minimal shm pipeline; waits for every release."""
    shape, chunk = (int(job["shape"][0]), int(job["shape"][1])), int(job["chunk"])
    pool, stack = frame_pool(shape), frame_stack(shape, chunk)
    ring = SharedRing(int(job["ring_bytes"]))
    ring.register(job["ring_socket"])
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.connect(job["endpoint"])
    _ready()
    for first in range(0, job["count"], chunk):
        size = min(chunk, job["count"] - first)
        frames = stack[:size] if chunk > 1 else pool[first % POOL]
        offset, slot = ring.slot(frames.nbytes, DELIVERY_TIMEOUT_S)
        slot[:] = frames.reshape(-1).view(np.uint8)
        socket.send_multipart([b"f", RAW_SLOT.pack(offset, frames.nbytes)])
    while ring.lent:
        ring.collect_releases(DELIVERY_TIMEOUT_S)
    socket.close(linger=-1)
    context.term()
    ring.close()


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    publish(json.loads(sys.argv[1]))
