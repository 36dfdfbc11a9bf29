"""Shared-memory rings between real publisher and daemon processes (and hostile ones)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from framesink import Publisher, PublishError
from framesink.core import FrameChunk
from framesink.transport import SharedRing

from ..conftest import InProcessDaemon
from ..helpers import (
    DaemonProcess,
    DelegatingSink,
    pattern,
    read_metadata,
    read_tiff,
    run_fake_camera,
    start_tyx,
)

StartDaemon = Callable[..., DaemonProcess]
RING = 8 << 20
SHAPE = (64, 64)


def _ring_maps(pid: int) -> int:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sum("framesink-ring" in line for line in maps.splitlines())


def test_frames_through_a_ring_are_written_pixel_exact(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    status = daemon.status()
    assert status.shared_memory is not None
    assert Path(status.shared_memory).stat().st_mode & 0o077 == 0
    frames = pattern(300, SHAPE, "uint16")
    with Publisher(daemon.ingest, kind="push", control=daemon.control, shared_memory=RING) as pub:
        run = start_tyx(pub, "ring", dtype="uint16", frame_shape=SHAPE)
        for frame in frames:
            run.send(frame)
        run.send(frames[:10], index=300, chunk=5)
        entry = run.stop(wait=30)
        assert pub.ring is not None
        ring = pub.ring
        deadline = time.monotonic() + 10
        while ring.lent and time.monotonic() < deadline:
            ring.collect_releases(0.2)
        assert ring.lent == 0, "every slot came back"
    assert entry is not None
    assert (entry.frames_written, entry.complete) == (310, True)
    written = read_tiff(daemon.data_root / "ring" / "ring.ome.tiff")[1]
    np.testing.assert_array_equal(written, np.concatenate([frames, frames[:10]]))
    # Closing waited for the daemon to unmap: the publisher freed the pages itself.
    assert _ring_maps(daemon.process.pid) == 0


def test_ring_publishers_send_on_the_private_ring_ingest_socket(
    start_daemon: StartDaemon,
) -> None:
    """Every message of a ring acquisition goes to the ring ingest socket (deep queue, no
    pixels): it arrives even when the publisher's main endpoint leads nowhere."""
    daemon = start_daemon(socket="pull")
    status = daemon.status()
    assert status.shared_memory_ingest == f"ipc://{status.shared_memory}.zmq"
    ipc_file = Path(status.shared_memory_ingest.removeprefix("ipc://"))
    assert ipc_file.stat().st_mode & 0o077 == 0
    frames = pattern(40, SHAPE, "uint16")
    with zmq.Context() as context, context.socket(zmq.PULL) as nowhere:
        port = nowhere.bind_to_random_port("tcp://127.0.0.1")
        with Publisher(
            f"tcp://127.0.0.1:{port}", kind="push", control=daemon.control, shared_memory=RING
        ) as pub:
            run = start_tyx(pub, "private", dtype="uint16", frame_shape=SHAPE)
            for frame in frames:
                run.send(frame)
            entry = run.stop(wait=30)
        assert nowhere.poll(0) == 0, "nothing went to the main endpoint"
        nowhere.close(linger=0)
    assert entry is not None
    assert (entry.frames_written, entry.complete) == (40, True)
    np.testing.assert_array_equal(
        read_tiff(daemon.data_root / "private" / "private.ome.tiff")[1], frames
    )


def test_a_daemon_that_refuses_shared_memory_makes_start_raise(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull", env={"FRAMESINK_SHARED_MEMORY": "false"})
    assert daemon.status().shared_memory is None
    assert daemon.status().shared_memory_ingest is None
    with (
        Publisher(daemon.ingest, kind="push", control=daemon.control, shared_memory=RING) as pub,
        pytest.raises(PublishError, match="does not accept shared memory"),
    ):
        start_tyx(pub, "refused", dtype="uint16", frame_shape=SHAPE)
    with pytest.raises(ValueError, match="control"):
        Publisher(daemon.ingest, kind="push", shared_memory=RING)


class HeldSink(DelegatingSink):
    """Holds every write until the test lets it go: slots stay lent meanwhile."""

    gate = threading.Event()

    def write(self, chunks: Sequence[FrameChunk]) -> None:
        assert self.gate.wait(20)
        super().write(chunks)


@pytest.fixture
def raw_ring(
    in_process_daemon: Callable[..., InProcessDaemon],
) -> Iterator[tuple[InProcessDaemon, SharedRing, zmq.Socket[bytes]]]:
    HeldSink.gate.clear()
    daemon = in_process_daemon(HeldSink)
    ring = SharedRing(RING)
    status = daemon.client.status()
    assert status.shared_memory is not None
    token = ring.register(status.shared_memory)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(daemon.ingest)
    start = {
        "v": 1,
        "type": "start",
        "acquisition": "raw",
        "seq": 0,
        "metadata": {"axes": "TYX"},
        "output": {"output_path": "raw", "output_name": "raw"},
        "dtype": "uint16",
        "frame_shape": list(SHAPE),
        "shared_memory": {"ring": token},
    }
    push.send_multipart([b"", msgpack.packb(start)])
    yield daemon, ring, push
    HeldSink.gate.set()
    push.close()
    context.term()
    ring.close()


def _frames(
    push: zmq.Socket[bytes], seq: int, index: int, offset: int, length: int, **extra: Any
) -> None:
    header = {
        "v": 1,
        "type": "frames",
        "acquisition": "raw",
        "seq": seq,
        "index": index,
        "count": 1,
        "shm": {"offset": offset, "length": length},
        **extra,
    }
    push.send_multipart([b"", msgpack.packb(header)])


def test_bad_slots_are_rejected_and_counted_and_the_acquisition_goes_on(
    raw_ring: tuple[InProcessDaemon, SharedRing, zmq.Socket[bytes]],
) -> None:
    daemon, ring, push = raw_ring
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    ring.memory[:frame_bytes] = pattern(1, SHAPE, "uint16").view(np.uint8).reshape(-1)
    _frames(push, 1, 0, 0, frame_bytes)  # good: slot 0 is now lent (the disk is held)
    _frames(push, 2, 1, 0, frame_bytes)  # slot 0 again before its release
    _frames(push, 3, 1, RING - 4096, frame_bytes)  # runs past the end of the ring
    _frames(push, 4, 1, 100, frame_bytes)  # not aligned
    _frames(push, 5, 1, 1 << 40, frame_bytes)  # far outside
    _frames(push, 6, 1, 8192, frame_bytes - 2)  # wrong length for one frame
    push.send_multipart(
        [
            b"",
            msgpack.packb(
                {
                    "v": 1,
                    "type": "frames",
                    "acquisition": "raw",
                    "seq": 7,
                    "index": 1,
                    "count": 1,
                    "shm": {"offset": 65536, "length": frame_bytes},
                }
            ),
            bytes(frame_bytes),
        ]
    )
    status = daemon.client.wait_for_status(lambda s: s.counters.messages == 8, 10)
    rejected = status.counters.rejected_by_reason
    assert rejected.get("shm_in_use") == 1
    assert rejected.get("bad_shm") == 3
    assert rejected.get("payload_size") == 1
    assert rejected.get("unexpected_payload") == 1
    HeldSink.gate.set()
    ring.memory[8192 : 8192 + frame_bytes] = (
        pattern(1, SHAPE, "uint16", start=1).view(np.uint8).reshape(-1)
    )
    _frames(push, 8, 1, 8192, frame_bytes)
    push.send_multipart(
        [b"", msgpack.packb({"v": 1, "type": "stop", "acquisition": "raw", "seq": 9})]
    )
    entry = daemon.client.wait_for_acquisition("raw", 20)
    # Five of the six rejected messages arrived and were refused for their slot or size:
    # rejected, not lost. Seq 7 could not be read as a frames message at all (a payload
    # beside a slot): it counts as lost. Either way the acquisition is incomplete.
    assert (entry.frames_written, entry.messages_lost, entry.complete) == (2, 1, False)
    assert entry.rejected_messages == 6
    np.testing.assert_array_equal(
        read_tiff(daemon.data_root / "raw" / "raw.ome.tiff")[1], pattern(2, SHAPE, "uint16")
    )


def test_closing_a_ring_waits_until_the_daemon_has_written_and_unmapped_it(
    raw_ring: tuple[InProcessDaemon, SharedRing, zmq.Socket[bytes]],
) -> None:
    daemon, ring, push = raw_ring
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    for index in range(3):
        offset, slot = ring.slot(frame_bytes, 1.0)
        slot[:] = pattern(1, SHAPE, "uint16", start=index).view(np.uint8).reshape(-1)
        _frames(push, index + 1, index, offset, frame_bytes)
    del slot
    push.send_multipart(
        [b"", msgpack.packb({"v": 1, "type": "stop", "acquisition": "raw", "seq": 4})]
    )
    daemon.client.wait_for_status(lambda s: s.counters.messages == 5, 10)
    closing = threading.Thread(target=ring.close)
    closing.start()
    closing.join(0.4)
    assert closing.is_alive(), "close returned while the daemon still held three slots"
    assert _ring_maps(os.getpid()) == 2  # the publisher's mapping and the daemon's
    HeldSink.gate.set()
    closing.join(5)
    assert not closing.is_alive()
    assert ring.lent == 0, "the last releases were read before the end of file"
    assert _ring_maps(os.getpid()) == 0, "the daemon unmapped before it closed"
    entry = daemon.client.wait_for_acquisition("raw", 20)
    assert (entry.frames_written, entry.complete) == (3, True)
    np.testing.assert_array_equal(
        read_tiff(daemon.data_root / "raw" / "raw.ome.tiff")[1], pattern(3, SHAPE, "uint16")
    )


def test_rings_that_are_not_sealed_memfds_of_the_right_size_are_refused(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon(socket="pull")
    path = daemon.status().shared_memory
    assert path is not None

    def register(fd: int, size: int) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(path)
            socket.send_fds(connection, [struct.pack("<8sQ", b"FSRING01", size)], [fd])
            return connection.recv(4096).decode()

    plain = tmp_path / "plain.bin"
    plain.write_bytes(bytes(RING))
    with plain.open("rb") as handle:
        assert "must be a memfd" in register(handle.fileno(), RING)
    unsealed = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    os.ftruncate(unsealed, RING)
    assert "sealed against shrinking" in register(unsealed, RING)
    fcntl.fcntl(unsealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    assert "announced" in register(unsealed, RING * 2)
    assert register(unsealed, RING).startswith("OK ")
    os.close(unsealed)
    ring = SharedRing(RING)
    try:
        with pytest.raises(PermissionError):  # sealed: it can never shrink under the daemon
            os.ftruncate(ring.fileno(), 4096)
    finally:
        ring.close()
    assert "refused a shared-memory ring" in daemon.log()
    assert daemon.stop() == 0


OTHER_USER = """
import os, sys
from framesink.transport import SharedRing, RingError
os.setgid(65534); os.setuid(65534)
ring = SharedRing(1 << 20)
try:
    ring.register(sys.argv[1])
except RingError as exc:
    print("refused:", exc)
    sys.exit(3)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_register_a_ring(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    result = subprocess.run(
        [sys.executable, "-c", OTHER_USER, str(daemon.status().shared_memory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refused" in result.stdout


KILLED_PUBLISHER = """
import os, signal, sys
import numpy as np
from framesink import Publisher
ingest, control, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
publisher = Publisher(ingest, kind="push", control=control, shared_memory=1 << 20)
run = publisher.start("killed", {"axes": "TYX"}, output_path="killed", output_name="k",
                      dtype="uint16", frame_shape=(64, 64), idle_timeout=1)
for index in range(count):
    run.send(np.full((64, 64), index, np.uint16))
publisher.control_client.wait_for_status(lambda s: s.counters.frames_received == count, 30)
print(publisher.ring.lent, "slots not yet seen released", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_publisher_killed_holding_slots_loses_nothing_that_reached_the_daemon(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(socket="pull")
    dev_shm_before = set(os.listdir("/dev/shm"))
    result = subprocess.run(
        [sys.executable, "-c", KILLED_PUBLISHER, daemon.ingest[0], daemon.control, "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    entry = daemon.wait_finished("killed", timeout=30)
    assert entry.frames_written == 100
    assert entry.reason == "timeout"
    pixels = read_tiff(daemon.data_root / "killed" / "k.ome.tiff")[1]
    assert [int(frame[0, 0]) for frame in pixels] == list(range(100))
    daemon.wait_for(lambda _: _ring_maps(daemon.process.pid) == 0)
    assert set(os.listdir("/dev/shm")) == dev_shm_before
    assert read_metadata(daemon.data_root / "killed")["framesink"]["frames_written"] == 100


def test_a_restarted_daemon_makes_the_next_send_fail_clearly(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon(socket="pull")
    with Publisher(daemon.ingest, kind="push", control=daemon.control, shared_memory=RING) as pub:
        run = start_tyx(pub, "cut", dtype="uint16", frame_shape=SHAPE)
        run.send(pattern(4, SHAPE, "uint16"))
        daemon.wait_for(lambda s: s.counters.frames_written == 4)
        assert daemon.stop() == 0
        with pytest.raises(PublishError, match="closed the shared-memory ring"):
            run.send(pattern(8, SHAPE, "uint16"))
    assert read_metadata(daemon.data_root / "cut")["framesink"]["frames_written"] == 4


def test_the_fake_camera_publishes_through_shared_memory(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    result = run_fake_camera(
        daemon,
        "--count", "40", "--shape", "32", "32", "--acquisition", "fake-shm",
        "--shared-memory", str(1 << 20),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "daemon wrote 40 frames" in result.stdout
    assert daemon.status().counters.frames_received == 40


def test_a_refused_start_raises_at_start_with_the_reason(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    with (
        Publisher(daemon.ingest, kind="push", control=daemon.control, shared_memory=RING) as pub,
        pytest.raises(PublishError, match="refused acquisition 'refused': bad_output"),
    ):
        pub.start(
            "refused", {"axes": "TYX"}, output_path="x", output_name=".framesink-mine",
            dtype="uint16", frame_shape=SHAPE,
        )  # fmt: skip


def test_a_publisher_that_talks_after_registration_loses_its_ring(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(socket="pull")
    path = daemon.status().shared_memory
    assert path is not None
    ring = SharedRing(RING)
    try:
        token = ring.register(path)
        assert ring._connection is not None
        ring._connection.send(b"chatter")
        daemon.wait_for(lambda _: "sent bytes after registration" in daemon.log())
        with Publisher(daemon.ingest, kind="push", control=daemon.control) as pub:
            header = {
                "v": 1, "type": "start", "acquisition": "gone", "seq": 0,
                "metadata": {"axes": "TYX"}, "output": {"output_path": "g", "output_name": "g"},
                "dtype": "uint16", "frame_shape": list(SHAPE), "shared_memory": {"ring": token},
            }  # fmt: skip
            pub.send([b"", msgpack.packb(header)])
        status = daemon.wait_for(lambda s: "bad_shm" in s.counters.rejected_by_reason)
        assert status.entry("gone") is None
    finally:
        ring.close()


def test_a_refused_start_is_not_confirmed_by_an_earlier_run_of_its_id(
    start_daemon: StartDaemon,
) -> None:
    """Review 2, item 12: the previous run's finished entry confirmed a refused start."""
    daemon = start_daemon(socket="pull", env={"FRAMESINK_MAX_OPEN": "1"})
    with Publisher(daemon.ingest, kind="push", control=daemon.control, shared_memory=RING) as pub:
        first = start_tyx(pub, "again", dtype="uint16", frame_shape=SHAPE)
        first.send(pattern(2, SHAPE, "uint16"))
        assert first.stop(wait=20) is not None
        holder = start_tyx(pub, "holder", dtype="uint16", frame_shape=SHAPE)
        with pytest.raises(PublishError, match="refused acquisition 'again': too_many_open"):
            start_tyx(pub, "again", dtype="uint16", frame_shape=SHAPE)
        holder.stop(wait=20)


def test_only_an_entry_of_this_run_confirms_a_start(start_daemon: StartDaemon) -> None:
    """Whatever the timing: a finished entry of the same id, there before the start, is
    no confirmation (here no start is sent at all, so none may come)."""
    from framesink import ControlClient, ControlError

    daemon = start_daemon(socket="pull")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as pub:
        run = start_tyx(pub, "again", dtype="uint16", frame_shape=SHAPE)
        assert run.stop(wait=20) is not None
    client = ControlClient(daemon.control, timeout=5.0)
    before = client.status()
    assert before.entry("again") is not None
    with pytest.raises(ControlError):
        client.confirm_started(["again"], before, timeout=1.0)
