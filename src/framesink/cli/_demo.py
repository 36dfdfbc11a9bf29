"""``framesink demo``: a real daemon process and the synthetic camera, end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..daemon import serve_command, wait_until_ready
from ..store import read_record
from ..transport import ClientKeys, Publisher, write_certificates
from ._camera import SyntheticCamera, publish_synthetic

READY_TIMEOUT_S = 30.0
DEMO_RING_BYTES = 64 << 20
"""The demo's shared-memory ring, where the host has memfd (Linux): the fastest path."""
STOP_TIMEOUT_S = 120.0


def run_demo(
    data_root: Path | None,
    frames: int,
    shape: tuple[int, ...],
    dtype: str,
    rate: float | None,
    *,
    curve: bool = False,
    compression: str | None = None,
    image_format: str | None = None,
) -> int:
    """With ``curve``, the daemon and the camera authenticate with fresh CURVE keys;
    ``compression`` names the codec of the acquisition's pixels, ``image_format`` its
    storage format."""
    root = (data_root or Path(tempfile.mkdtemp(prefix="framesink-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="framesink-demo-sockets-") as sockets:
        ingest, control = f"ipc://{sockets}/ingest", f"ipc://{sockets}/control"
        extra, keys = _demo_keys(Path(sockets)) if curve else ([], None)
        command = serve_command(root, bind=[ingest], control=control, socket="pull", extra=extra)
        entry = None
        with subprocess.Popen(command) as daemon:
            try:
                wait_until_ready(
                    control, daemon, READY_TIMEOUT_S, None if keys is None else keys.client()
                )
                print(
                    f"daemon ready (pid {daemon.pid}); "
                    f"publishing {frames} frames of {list(shape)} {dtype}",
                    file=sys.stderr,
                )
                with Publisher(
                    ingest,
                    kind="push",
                    control=control,
                    curve_server_key=None if keys is None else keys.server_public,
                    curve_client_key=None if keys is None else keys.camera_secret,
                    shared_memory=DEMO_RING_BYTES if hasattr(os, "memfd_create") else None,
                ) as publisher:
                    path = "shared memory" if publisher.ring is not None else "the socket"
                    print(f"pixels go through {path}", file=sys.stderr)
                    entry = publish_synthetic(
                        publisher,
                        SyntheticCamera(shape, dtype, rate),
                        acquisition="demo",
                        count=frames,
                        output_path="demo",
                        output_name="synthetic",
                        chunk=4,
                        wait=STOP_TIMEOUT_S,
                        compression=compression,
                        image_format=image_format,
                    )
            finally:
                daemon.send_signal(signal.SIGTERM)
                code = daemon.wait(STOP_TIMEOUT_S)
    # The daemon never reuses a folder: a second demo in the same root goes to demo_1, ...
    folder = Path(entry.path).parent if entry else root / "demo"
    result = _report(folder, code)
    if data_root is None:
        print(f"  this demo's data ({_size(root)}) stays until you remove it: rm -r {root}")
    return result


def _size(path: Path) -> str:
    """What a file, or a folder with all it holds, takes."""
    files = path.rglob("*") if path.is_dir() else [path]
    total = sum(item.stat().st_size for item in files if item.is_file())
    return f"{total / 2**20:.1f} MiB"


def _demo_keys(folder: Path) -> tuple[list[str], _DemoKeys]:
    """A server and a camera certificate, and the flags that make the daemon use them."""
    server_public, server_secret = write_certificates("server", folder / "server")
    _, camera_secret = write_certificates("camera", folder / "clients")
    flags = ["--curve-server-key", str(server_secret), "--curve-clients", str(folder / "clients")]
    print("CURVE on: fresh keys for this run (removed when it ends)", file=sys.stderr)
    return flags, _DemoKeys(server_public, camera_secret)


@dataclass(frozen=True)
class _DemoKeys:
    server_public: Path
    camera_secret: Path

    def client(self) -> ClientKeys:
        return ClientKeys.load(self.server_public, self.camera_secret)


def _report(folder: Path, code: int) -> int:
    metadata = folder / "metadata.json"
    if code != 0 or not metadata.exists():
        print(
            f"demo failed: daemon exit code {code}; {metadata} "
            f"{'exists' if metadata.exists() else 'is missing'}",
            file=sys.stderr,
        )
        return 1
    record = read_record(folder)
    image = folder / record.files.image
    print(f"wrote {image}")
    print(
        f"  shape {record.shape} ({record.axes}), {record.dtype}, "
        f"{record.frames_written} frames written, {record.frames_missing} missing, "
        f"complete={record.complete}, {_size(image)}"
        + (f" ({record.compression.value})" if record.compression != "none" else "")
    )
    print(f"  metadata: {metadata}")
    if record.files.sidecar:
        print(f"  per-frame metadata: {folder / record.files.sidecar}")
    if image.is_dir():
        print(f"  open it: napari {image}  (or zarr.open_group('{image}')['0'])")
    else:
        print(
            f"  open it: python -c \"import tifffile; print(tifffile.imread('{image}').shape)\""
            "  (or drag it into Fiji)"
        )
    return 0 if record.complete else 1
