"""Side-by-side benchmark: plain tifffile writes vs framesink end to end, in one run.

For each frame size, on the same disk and the same frames:
  baseline   in-process tifffile, one write(contiguous=True) per frame into a BigTIFF,
             closed and fsynced (run before and after every other run; the mean of
             the two neighbours is that run's reference)
  tcp / ipc  a publisher process -> ZeroMQ PUSH/PULL -> `framesink serve` -> file
             finalized and fsynced by the daemon
  inproc     framesink's StreamWriter in the publishing process (no socket, no daemon)
  minimal    tcp into a receive-copy-O_DIRECT loop with no framesink code: the machine's
             ceiling for a separate receiving process
  minimal-shm  the shm publisher into a loop writing its ring slots with O_DIRECT and
             releasing them, with no framesink daemon code: the ceiling for shm
and a SUB run where the publisher outpaces the disk, checking that the frames reported
missing in metadata.json are exactly the frames not written.

Two rates are shown: "ingest" until every frame was handed to the operating system,
"total" until the file was final on disk. Compare ratios, not absolute figures: the
disk here is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
import tifffile

from framesink import AcquisitionRecord, ControlClient, StreamWriter
from framesink.cli import ProgressBar
from framesink.daemon import serve_command, wait_until_ready
from framesink.store import read_record

from . import compressed, live_page, minimal, ome_zarr, publisher, report
from .cases import POOL, Case, Memory, Options, Result, frame_pool, frame_stack

STATUS_INTERVAL = 0.05
"""How often the daemon's progress is polled: the times' resolution. Each answer costs
the daemon ~0.25 ms of CPU, counted in its figures; 20 polls a second keep that under
1 % of a core."""


def baseline(options: Options, case: Case, mode: str) -> Result:
    pool = frame_pool(case.shape)
    path = options.folder / "baseline.tif"
    options.memory.prefault(case)
    start = time.perf_counter()
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index in range(case.count):
            tiff.write(pool[index % POOL], contiguous=True, metadata=None)
        ingest = time.perf_counter() - start
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    total = time.perf_counter() - start
    path.unlink()
    return Result.timed(case, mode, ingest, total)


class RssSampler(threading.Thread):
    """Samples a process's memory and CPU time every 20 ms; keeps the peaks.

    ``peak`` is the daemon's own memory (anonymous and file pages); the publisher's
    shared-memory ring, mapped by the daemon too, is ``peak_shared`` and not in it.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.status = Path(f"/proc/{pid}/status")
        self.peak = 0
        self.peak_shared = 0
        self.cpu_s = 0.0
        self.cpu_at_start = 0.0
        self.stopping = threading.Event()

    def begin(self) -> None:
        """The timed run starts: CPU time from here on is the run's (not start-up's)."""
        times = self.process.cpu_times()
        self.cpu_at_start = times.user + times.system

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            try:
                fields = dict(line.split(":", 1) for line in self.status.read_text().splitlines())
                kib = {
                    key: int(value.split()[0])
                    for key, value in fields.items()
                    if key.startswith("Rss")
                }
                self.peak = max(self.peak, (kib["RssAnon"] + kib["RssFile"]) * 1024)
                self.peak_shared = max(self.peak_shared, kib["RssShmem"] * 1024)
                times = self.process.cpu_times()
                self.cpu_s = times.user + times.system - self.cpu_at_start
            except (psutil.Error, OSError, KeyError):
                return


@dataclass(frozen=True)
class DaemonRun:
    """One acquisition through a daemon process: its record and what was measured."""

    record: AcquisitionRecord
    pages: int
    ingest_s: float
    total_s: float
    peak_rss: int
    cpu_s: float
    peak_shared: int = 0
    image_bytes: int = 0
    page_fetches: tuple[int, int] = (0, 0)

    def result(self, case: Case, mode: str) -> Result:
        return Result.timed(
            case,
            mode,
            self.ingest_s,
            self.total_s,
            peak_rss_mb=round(self.peak_rss / 2**20, 1),
            ring_mb=round(self.peak_shared / 2**20, 1),
            daemon_cpu_s=round(self.cpu_s, 2),
            cpu_s_per_gb=round(self.cpu_s / (case.total_bytes / 1e9), 3),
            frames_written=self.record.frames_written,
            frames_missing=self.record.frames_missing,
            unaccounted=self.pages - self.record.frames_written - self.record.frames_missing,
        )


def run_daemon(
    options: Options,
    case: Case,
    transport: str,
    socket_kind: Literal["pull", "sub"],
    daemon_args: tuple[str, ...],
    *,
    frames: Literal["random", "realistic"] = "random",
) -> DaemonRun:
    """One daemon, one publisher process, one acquisition (of ``frames``: random bits,
    or camera-like frames for compression)."""
    root = options.folder / "daemon"
    with tempfile.TemporaryDirectory(prefix="framesink-bench-") as sockets:
        control = f"ipc://{sockets}/control"
        bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{sockets}/ingest"
        ring = options.ring_bytes if transport == "shm" else None
        command = serve_command(
            root, bind=[bind], control=control, socket=socket_kind, extra=daemon_args
        )
        daemon = subprocess.Popen(command)
        try:
            wait_until_ready(control, daemon, 30)
            client = ControlClient(control)
            job = {
                "endpoint": client.status().ingest[0],
                "kind": "push" if socket_kind == "pull" else "pub",
                "control": control,
                "shape": case.shape,
                "count": case.count,
                "chunk": case.chunk,
                "shared_memory": ring,
                "frames": frames,
            }
            sampler = RssSampler(daemon.pid)
            sampler.start()
            viewer = live_page.PageViewer(client.status().metrics)
            viewer.start()
            with publisher.start(job) as child:
                options.memory.prefault(case)
                sampler.begin()
                start = time.perf_counter()
                publisher.go(child)
                ingest, total = follow(client, case, start, options.quiet)
                child.wait(120)
            sampler.stopping.set()
            sampler.join()
            viewer.stop()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(300)
    record = read_record(root / "bench")
    image = root / "bench" / record.files.image
    pages, image_bytes = count_pages(image), ome_zarr.folder_bytes(image)
    shutil.rmtree(root)
    return DaemonRun(
        record,
        pages,
        ingest,
        total,
        sampler.peak,
        sampler.cpu_s,
        sampler.peak_shared,
        image_bytes,
        (viewer.statuses, viewer.thumbnails),
    )


def follow(client: ControlClient, case: Case, start: float, quiet: bool) -> tuple[float, float]:
    """Poll the daemon: (seconds until every frame was handled, seconds until final)."""
    progress = None if quiet else ProgressBar(case.count, f"{case.name} ")
    handled, ingest = 0, None
    while True:
        entry = client.status().entry("bench")
        now = time.perf_counter() - start
        if entry is not None:
            done = entry.frames_written + entry.frames_missing
            if progress is not None and done > handled:
                progress.update(done - handled)
            handled = max(handled, done)
            if ingest is None and handled >= case.count:
                ingest = now
            if entry.state != "open":
                if entry.state != "finished":
                    raise RuntimeError(f"acquisition failed: {entry.error}")
                if progress is not None:
                    progress.close()
                return ingest or now, now
        time.sleep(STATUS_INTERVAL)


def count_pages(path: Path) -> int:
    """Pages of an OME-TIFF; frames an OME-Zarr's array holds."""
    if path.is_dir():
        document = json.loads((path / "0" / "zarr.json").read_text())
        return math.prod(document["shape"][:-2])
    with tifffile.TiffFile(path) as tiff:
        return len(tiff.pages)


def in_process(options: Options, case: Case) -> Result:
    """framesink's StreamWriter in the camera's own process: no socket, no daemon."""
    pool, stack = frame_pool(case.shape), frame_stack(case.shape, case.chunk)
    folder = options.folder / "inproc"
    options.memory.prefault(case)
    start = time.perf_counter()
    writer = StreamWriter(
        folder,
        "bench",
        {"axes": "TYX"},
        dtype="uint16",
        frame_shape=case.shape,
        overwrite=True,
        direct_io="--no-direct-io" not in options.daemon_args,
    )
    for first in range(0, case.count, case.chunk):
        size = min(case.chunk, case.count - first)
        writer.write(stack[:size] if case.chunk > 1 else pool[first % POOL])
    ingest = time.perf_counter() - start
    record = writer.finalize()
    total = time.perf_counter() - start
    pages = count_pages(folder / record.files.image)
    shutil.rmtree(folder)
    return Result.timed(
        case,
        "framesink in-process",
        ingest,
        total,
        frames_written=record.frames_written,
        frames_missing=record.frames_missing,
        unaccounted=pages - record.frames_written - record.frames_missing,
    )


def measure(options: Options, case: Case, transport: str) -> Result:
    if transport == "inproc":
        return in_process(options, case)
    if transport == "minimal":
        return minimal.tcp_pipeline(options, case)
    if transport == "minimal-shm":
        return minimal.shm_pipeline(options, case)
    run = run_daemon(options, case, transport, "pull", options.daemon_args)
    return run.result(case, f"framesink {transport} pull")


def benchmark_case(options: Options, case: Case, transports: list[str]) -> list[Result]:
    """Baselines interleaved with the other runs; each run is compared with its neighbours.

    The disk is shared and its speed drifts, so a run's reference is the mean of the
    baseline just before it and the one just after it.
    """
    results = [baseline(options, case, "baseline #1")]
    for number, transport in enumerate(transports, start=2):
        result = measure(options, case, transport)
        before, after = results[-1], baseline(options, case, f"baseline #{number}")
        result.ratio = round(result.total_mb_s / ((before.total_mb_s + after.total_mb_s) / 2), 3)
        results += [result, after]
    return results


def overload(options: Options, count: int) -> Result:
    case = Case("SUB overload 2048x2048 u16", (2048, 2048), count, 1)
    args = ("--queue-bytes", "48MiB", "--fsync-interval", "0.05", "--idle-timeout", "30")
    return run_daemon(options, case, "ipc", "sub", args).result(case, "framesink ipc sub")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir", type=Path, help="folder to write in (default: the system temporary folder)"
    )
    parser.add_argument(
        "--large-count", type=int, default=640, help="2048x2048 uint16 frames (640 = 5.4 GB)"
    )
    parser.add_argument(
        "--small-count", type=int, default=40000, help="256x256 uint16 frames (40000 = 5.2 GB)"
    )
    parser.add_argument("--small-chunk", type=int, default=1, help="small frames per message")
    parser.add_argument(
        "--overload-count", type=int, default=400, help="frames in the SUB overload run (0: skip)"
    )
    parser.add_argument(
        "--transports",
        default="tcp,ipc,shm,inproc,minimal,minimal-shm",
        help="comma-separated: tcp, ipc, shm, inproc, minimal, minimal-shm (see above)",
    )
    parser.add_argument(
        "--fsync-interval", type=float, default=1.0, help="the daemon's fsync_interval"
    )
    parser.add_argument(
        "--direct-io",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the daemon's direct_io (--no-direct-io: through the page cache, like the baseline)",
    )
    parser.add_argument(
        "--no-prefault",
        dest="prefault",
        action="store_false",
        help="skip touching memory before each run (see cases.Memory for why it is there)",
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the untimed first baseline"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every case (medians are printed)"
    )
    parser.add_argument(
        "--ring-bytes", type=int, default=256 << 20, help="the shm publisher's ring (bytes)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--compression",
        choices=["zstd", "deflate"],
        help="instead: compressed OME-TIFF through shared memory against tifffile's own "
        "compressed writes (large frames, --repeat rounds; see benchmarks/compressed.py)",
    )
    parser.add_argument("--compression-level", type=int, default=1, help="its level")
    parser.add_argument(
        "--live-page",
        action="store_true",
        help="instead: the daemon's CPU per GB with its live page open and polled, against "
        "none (see benchmarks/live_page.py)",
    )
    parser.add_argument(
        "--ome-zarr",
        action="store_true",
        help="instead: OME-Zarr through shared memory against acquire-zarr (blosc-lz4) and "
        "against framesink's own OME-TIFF (uncompressed; see benchmarks/ome_zarr.py)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    cases = [
        Case("large 2048x2048 u16", (2048, 2048), arguments.large_count, 1),
        Case("small 256x256 u16", (256, 256), arguments.small_count, arguments.small_chunk),
    ]
    options = Options(
        folder=Path(tempfile.mkdtemp(prefix="framesink-bench-", dir=arguments.dir)),
        memory=Memory(arguments.prefault),
        quiet=arguments.json,
        daemon_args=(
            "--fsync-interval",
            str(arguments.fsync_interval),
            "--direct-io" if arguments.direct_io else "--no-direct-io",
        ),
        ring_bytes=arguments.ring_bytes,
    )
    if arguments.compression or arguments.ome_zarr or arguments.live_page:
        return _compressed(arguments, cases[0], options)
    results: list[Result] = []
    try:
        if arguments.warmup:
            # The first large write of a run is often much slower (a fresh disk region):
            # one untimed baseline keeps that out of the comparisons.
            baseline(options, next(c for c in cases if c.count > 0), "warm-up")
        for _ in range(arguments.repeat):
            for case in (c for c in cases if c.count > 0):
                results += benchmark_case(options, case, arguments.transports.split(","))
        if arguments.overload_count > 0:
            results.append(overload(options, arguments.overload_count))
    finally:
        shutil.rmtree(options.folder, ignore_errors=True)
    print(report.as_json(results) if arguments.json else report.as_text(results, arguments.repeat))
    return 0


def _compressed(arguments: argparse.Namespace, case: Case, options: Options) -> int:
    try:
        if arguments.warmup:
            baseline(options, case, "warm-up")
        if arguments.ome_zarr:
            text = ome_zarr.compare(options, case, rounds=arguments.repeat, run_daemon=run_daemon)
        elif arguments.live_page:
            text = live_page.compare(options, case, rounds=arguments.repeat, run_daemon=run_daemon)
        else:
            text = compressed.compare(
                options,
                case,
                arguments.compression,
                arguments.compression_level,
                rounds=arguments.repeat,
                run_daemon=run_daemon,
            )
    finally:
        shutil.rmtree(options.folder, ignore_errors=True)
    print(text)
    return 0
