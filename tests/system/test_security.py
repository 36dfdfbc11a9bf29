"""CURVE on ingest and control, over real sockets with certificates made by zmq.auth."""

from __future__ import annotations

import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from framesink import Publisher
from framesink.transport import ClientKeys, ControlClient, ControlError

from ..helpers import (
    DaemonProcess,
    framesink_command,
    pattern,
    read_tiff,
    run_fake_camera,
    run_framesink,
    start_tyx,
)

StartDaemon = Callable[..., DaemonProcess]


@dataclass(frozen=True)
class Keys:
    server_public: Path
    server_secret: Path
    clients: Path
    camera: Path
    other_camera: Path
    stranger: Path

    def client(self, secret: Path) -> ClientKeys:
        return ClientKeys.load(self.server_public, secret)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    made = tmp_path / "keys"
    clients = tmp_path / "clients"
    clients.mkdir()
    made.mkdir()
    pairs = {name: zmq.auth.create_certificates(made, name) for name in ("server", "cam", "cam2")}
    pairs["stranger"] = zmq.auth.create_certificates(made, "stranger")
    for name in ("cam", "cam2"):
        shutil.copy(pairs[name][0], clients)
    for _public, secret in pairs.values():
        Path(secret).chmod(0o600)
    return Keys(
        Path(pairs["server"][0]),
        Path(pairs["server"][1]),
        clients,
        Path(pairs["cam"][1]),
        Path(pairs["cam2"][1]),
        Path(pairs["stranger"][1]),
    )


def _secured(start_daemon: StartDaemon, keys: Keys) -> DaemonProcess:
    return start_daemon(
        "--curve-server-key",
        str(keys.server_secret),
        "--curve-clients",
        str(keys.clients),
        socket="pull",
        keys=keys.client(keys.camera),
    )


def _publisher(daemon: DaemonProcess, keys: Keys, secret: Path) -> Publisher:
    return Publisher(
        daemon.ingest,
        kind="push",
        control=daemon.control,
        send_timeout=2.0,
        curve_server_key=keys.server_public,
        curve_client_key=secret,
    )


def _send_plain_start(endpoint: str, acquisition: str) -> None:
    with zmq.Context() as context, context.socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(endpoint)
        start = {
            "v": 1,
            "type": "start",
            "acquisition": acquisition,
            "seq": 0,
            "metadata": {"axes": "TYX"},
            "output": {"output_path": acquisition, "output_name": "x"},
            "dtype": "uint8",
            "frame_shape": [2, 2],
        }
        push.send_multipart([b"", msgpack.packb(start)])


def test_only_listed_clients_get_in(start_daemon: StartDaemon, keys: Keys) -> None:
    daemon = _secured(start_daemon, keys)
    frames = pattern(6, (16, 16), "uint16")
    with _publisher(daemon, keys, keys.camera) as publisher:
        run = start_tyx(publisher, "allowed", dtype="uint16", frame_shape=(16, 16))
        run.send(frames)
        entry = run.stop(wait=20)
    assert entry is not None
    assert (entry.complete, entry.frames_written) == (True, 6)
    assert (read_tiff(daemon.data_root / "allowed" / "allowed.ome.tiff")[1] == frames).all()

    with _publisher(daemon, keys, keys.stranger) as intruder:
        start_tyx(intruder, "intruder", dtype="uint8", frame_shape=(2, 2))
        daemon.wait_for(lambda s: s.counters.auth_failures >= 1)
    _send_plain_start(daemon.ingest[0], "plain")
    status = daemon.wait_for(lambda s: s.counters.auth_failures >= 2)

    assert [a.acquisition for a in status.acquisitions] == ["allowed"]
    assert status.counters.messages == 3
    assert sorted(p.name for p in daemon.data_root.iterdir()) == ["allowed"]
    log = daemon.log()
    assert "refused a connection from 127.0.0.1: unknown client key" in log
    assert "no valid CURVE handshake" in log


def test_the_ring_ingest_socket_takes_the_same_keys(start_daemon: StartDaemon, keys: Keys) -> None:
    daemon = _secured(start_daemon, keys)
    ring_ingest = daemon.status().shared_memory_ingest
    assert ring_ingest is not None
    frames = pattern(8, (16, 16), "uint16")
    with Publisher(
        daemon.ingest,
        kind="push",
        control=daemon.control,
        curve_server_key=keys.server_public,
        curve_client_key=keys.camera,
        shared_memory=1 << 20,
    ) as publisher:
        run = start_tyx(publisher, "ring", dtype="uint16", frame_shape=(16, 16))
        for frame in frames:
            run.send(frame)
        entry = run.stop(wait=20)
    assert entry is not None
    assert (entry.complete, entry.frames_written) == (True, 8)
    assert (read_tiff(daemon.data_root / "ring" / "ring.ome.tiff")[1] == frames).all()

    _send_plain_start(ring_ingest, "plain")
    status = daemon.wait_for(lambda s: s.counters.auth_failures >= 1)
    assert [a.acquisition for a in status.acquisitions] == ["ring"]


def test_the_control_endpoint_answers_only_listed_clients(
    start_daemon: StartDaemon, keys: Keys
) -> None:
    daemon = _secured(start_daemon, keys)
    assert ControlClient(daemon.control, keys=keys.client(keys.other_camera)).ping()
    for refused in (
        ControlClient(daemon.control, timeout=1.0),
        ControlClient(daemon.control, timeout=1.0, keys=keys.client(keys.stranger)),
    ):
        with pytest.raises(ControlError, match="no answer"):
            refused.status()
    daemon.wait_for(lambda s: s.counters.auth_failures >= 2)
    command = framesink_command(
        "status",
        "--control",
        daemon.control,
        "--curve-client-key",
        str(keys.camera),
        "--curve-server-public-key",
        str(keys.server_public),
        "--json",
    )
    shown = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert shown.returncode == 0, shown.stderr
    assert '"auth_failures"' in shown.stdout


def test_an_acquisition_belongs_to_the_key_that_started_it(
    start_daemon: StartDaemon, keys: Keys
) -> None:
    daemon = _secured(start_daemon, keys)
    frames = pattern(4, (8, 8), "uint8")
    with (
        _publisher(daemon, keys, keys.camera) as owner,
        _publisher(daemon, keys, keys.other_camera) as other,
    ):
        run = start_tyx(owner, "mine", dtype="uint8", frame_shape=(8, 8))
        run.send(frames[:2])
        daemon.wait_for(lambda s: s.counters.frames_received == 2)
        forged = start_tyx(other, "other", dtype="uint8", frame_shape=(8, 8))
        forged.acquisition = "mine"
        forged.seq = 100
        forged.send(pattern(1, (8, 8), "uint8", start=99), index=2)
        forged.abort()
        daemon.wait_for(lambda s: s.counters.rejected_by_reason.get("not_owner", 0) == 2)
        run.send(frames[2:])
        entry = run.stop(wait=20)
    assert entry is not None
    assert (entry.complete, entry.frames_written, entry.rejected_messages) == (True, 4, 2)
    assert (read_tiff(daemon.data_root / "mine" / "mine.ome.tiff")[1] == frames).all()


def test_sighup_reloads_the_allowed_clients(start_daemon: StartDaemon, keys: Keys) -> None:
    daemon = _secured(start_daemon, keys)
    newcomer = ControlClient(daemon.control, timeout=1.0, keys=keys.client(keys.stranger))
    with pytest.raises(ControlError):
        newcomer.ping()
    shutil.copy(keys.stranger.with_suffix(".key"), keys.clients)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda _: "reloaded 3 allowed client keys" in daemon.log())
    assert newcomer.ping()
    for stale in keys.clients.iterdir():
        stale.unlink()
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda _: "kept the previous client keys" in daemon.log())
    assert newcomer.ping()


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (lambda k: k.server_secret.chmod(0o644), "server.key_secret"),
        (lambda k: k.server_secret.unlink(), "server.key_secret"),
        (lambda k: k.server_secret.write_text("nonsense"), "server.key_secret"),
        (lambda k: [p.unlink() for p in k.clients.iterdir()], "clients"),
        (lambda k: shutil.rmtree(k.clients), "clients"),
    ],
    ids=["secret-readable-by-others", "missing", "not-a-certificate", "no-clients", "no-dir"],
)
def test_a_misconfigured_key_setup_stops_the_daemon_at_start(
    keys: Keys, tmp_path: Path, break_it: Callable[[Keys], object], named: str
) -> None:
    break_it(keys)
    result = subprocess.run(
        framesink_command(
            "serve",
            "--data-root",
            str(tmp_path / "root"),
            "--bind",
            "tcp://127.0.0.1:*",
            "--control",
            f"ipc://{tmp_path}/ctl",
            "--curve-server-key",
            str(keys.server_secret),
            "--curve-clients",
            str(keys.clients),
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"FRAMESINK_CONFIG": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "bad CURVE setup" in result.stderr
    assert named in result.stderr


def test_framesink_keys_writes_a_private_secret(tmp_path: Path) -> None:
    result = run_framesink("keys", "cam", "--dir", str(tmp_path / "k"), timeout=30)
    assert result.returncode == 0, result.stderr
    secret, public = tmp_path / "k" / "cam.key_secret", tmp_path / "k" / "cam.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert zmq.auth.load_certificate(secret)[1] is not None
    assert zmq.auth.load_certificate(public)[0] == zmq.auth.load_certificate(secret)[0]
    again = run_framesink("keys", "cam", "--dir", str(tmp_path / "k"), timeout=30)
    assert again.returncode == 1
    assert "not overwriting" in again.stderr


def test_the_fake_camera_and_the_demo_take_keys(
    start_daemon: StartDaemon, keys: Keys, tmp_path: Path
) -> None:
    daemon = _secured(start_daemon, keys)
    keyed = run_fake_camera(
        daemon,
        "--count", "5", "--shape", "16", "16", "--acquisition", "keyed",
        "--curve-server-key", str(keys.server_public), "--curve-client-key", str(keys.camera),
    )  # fmt: skip
    assert keyed.returncode == 0, keyed.stderr
    assert "daemon wrote 5 frames" in keyed.stdout

    demo = run_framesink(
        "demo", "--curve", "--data-root", str(tmp_path / "demo"), "--frames", "8", "--rate", "0"
    )
    assert demo.returncode == 0, demo.stderr
    assert "CURVE on" in demo.stderr
    assert "8 frames written" in demo.stdout


def test_a_removed_key_stops_writing_at_the_reload(start_daemon: StartDaemon, keys: Keys) -> None:
    """Review 2, item 11: a removed key kept writing on the connection it already had."""
    daemon = _secured(start_daemon, keys)
    frames = pattern(4, (8, 8), "uint8")
    with (
        _publisher(daemon, keys, keys.camera) as kept,
        _publisher(daemon, keys, keys.other_camera) as removed,
    ):
        stays = start_tyx(kept, "stays", dtype="uint8", frame_shape=(8, 8))
        goes = start_tyx(removed, "goes", dtype="uint8", frame_shape=(8, 8))
        goes.send(frames[:2])
        stays.send(frames[:2])
        daemon.wait_for(lambda s: s.counters.frames_received == 4)
        (keys.clients / keys.other_camera.with_suffix(".key").name).unlink()
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda _: "reloaded 1 allowed client keys" in daemon.log())
        ended = daemon.wait_finished("goes")
        assert ended.state == "failed"
        assert ended.error is not None
        assert "removed" in ended.error
        goes.send(frames[2:], index=2)
        late = start_tyx(removed, "later", dtype="uint8", frame_shape=(8, 8))
        late.send(frames)
        status = daemon.wait_for(lambda s: s.counters.rejected_by_reason.get("key_revoked") == 3)
        assert status.entry("later") is None
        stays.send(frames[2:], index=2)
        entry = stays.stop(wait=20)
    assert entry is not None
    assert (entry.complete, entry.frames_written) == (True, 4)
    assert ended.frames_written == 2
    assert not (daemon.data_root / "later").exists()


def test_only_the_owner_or_an_admin_key_stops_an_acquisition(
    start_daemon: StartDaemon, keys: Keys, tmp_path: Path
) -> None:
    admins = tmp_path / "admins"
    admins.mkdir()
    shutil.copy(keys.other_camera.with_suffix(".key"), admins)
    daemon = start_daemon(
        "--curve-server-key",
        str(keys.server_secret),
        "--curve-clients",
        str(keys.clients),
        socket="pull",
        keys=keys.client(keys.camera),
        env={"FRAMESINK_CURVE_ADMINS": str(admins)},
    )
    shutil.copy(keys.stranger.with_suffix(".key"), keys.clients)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda _: "reloaded 3 allowed client keys" in daemon.log())
    owner = ControlClient(daemon.control, timeout=5.0, keys=keys.client(keys.camera))
    stranger = ControlClient(daemon.control, timeout=5.0, keys=keys.client(keys.stranger))
    admin = ControlClient(daemon.control, timeout=5.0, keys=keys.client(keys.other_camera))
    with _publisher(daemon, keys, keys.camera) as publisher:
        for name in ("first", "second"):
            start_tyx(publisher, name, dtype="uint8", frame_shape=(8, 8))
        daemon.wait_for(lambda s: s.entry("second") is not None)
        with pytest.raises(ControlError, match="did not start"):
            stranger.end("first", "stop")
        owner.end("first", "stop")
        admin.end("second", "abort")
    assert owner.wait_for_acquisition("first", 20).reason == "stop"
    assert owner.wait_for_acquisition("second", 20).reason == "abort"
