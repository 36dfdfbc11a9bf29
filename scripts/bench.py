#!/usr/bin/env python3
"""Side-by-side benchmark: plain tifffile writes vs framesink end to end, in one run.

For each frame size, on the same disk and the same frames:
  baseline   in-process tifffile, one write(contiguous=True) per frame into a BigTIFF,
             closed and fsynced (run before and after the framesink runs; their mean
             is the reference)
  tcp / ipc  a publisher process -> ZeroMQ PUSH/PULL -> `framesink serve` -> file
             finalized and fsynced by the daemon
and a SUB run where the publisher outpaces the disk, checking that the frames reported
missing in metadata.json are exactly the frames not written.

Two rates are shown: "ingest" until every frame was handed to the operating system,
"total" until the file was final on disk. Compare ratios, not absolute figures: the
disk here is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil
import tifffile
import zmq

from framesink.control import request
from framesink.demo import serve_command, wait_until_ready
from framesink.progress import ProgressBar
from framesink.publisher import Publisher
from framesink.writer import StreamWriter

POOL = 8
STATUS_INTERVAL = 0.02
MB = 1e6
PREFAULT = {"enabled": True}


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, int]
    count: int
    chunk: int

    @property
    def frame_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 2


@dataclass
class Result:
    case: str
    mode: str
    frames: int
    ingest_s: float
    total_s: float
    ingest_mb_s: float
    total_mb_s: float
    total_frames_s: float
    ratio: float | None = None
    peak_rss_mb: float | None = None
    frames_written: int | None = None
    frames_missing: int | None = None
    unaccounted: int | None = None
    daemon_cpu_s: float | None = None


def frame_pool(shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    return np.random.default_rng(0).integers(0, 4096, (POOL, *shape), dtype=np.uint16)


def prefault(case: Case) -> None:
    """Touch, then free, as much memory as the run writes (untimed, before every run).

    A virtual machine's host may take back guest memory that sits free (free page
    reporting, ballooning); the next use of each page then costs a fault on the host.
    Measured here: page-cache writes after a few idle seconds ran at ~0.5 GB/s instead
    of ~2.4 GB/s. Touching the memory first starts every run, baseline and framesink
    alike, from the same state.
    """
    if PREFAULT["enabled"]:
        block = np.ones(case.count * case.frame_bytes + (256 << 20), np.uint8)
        del block


def make_result(case: Case, mode: str, ingest_s: float, total_s: float, **extra: Any) -> Result:
    size = case.count * case.frame_bytes
    return Result(
        case.name,
        mode,
        case.count,
        round(ingest_s, 3),
        round(total_s, 3),
        round(size / ingest_s / MB, 1),
        round(size / total_s / MB, 1),
        round(case.count / total_s, 1),
        **extra,
    )


def baseline(folder: Path, case: Case, mode: str) -> Result:
    pool = frame_pool(case.shape)
    path = folder / "baseline.tif"
    prefault(case)
    start = time.perf_counter()
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index in range(case.count):
            tiff.write(pool[index % POOL], contiguous=True, metadata=None)
        ingest = time.perf_counter() - start
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    total = time.perf_counter() - start
    path.unlink()
    return make_result(case, mode, ingest, total)


class RssSampler(threading.Thread):
    """Samples a process's resident memory every 20 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.cpu_s = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                times = self.process.cpu_times()
                self.cpu_s = times.user + times.system
            except psutil.Error:
                return


def run_framesink(
    folder: Path,
    *,
    case: Case,
    transport: str,
    socket_kind: Literal["pull", "sub"],
    daemon_args: list[str],
    quiet: bool,
) -> tuple[dict[str, Any], float, float, RssSampler]:
    """One daemon, one publisher process, one acquisition: (record, ingest s, total s, peak RSS)."""
    root = folder / "daemon"
    with tempfile.TemporaryDirectory(prefix="framesink-bench-") as sockets:
        control = f"ipc://{sockets}/control"
        bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{sockets}/ingest"
        daemon = subprocess.Popen(
            serve_command(root, bind=[bind], control=control, socket=socket_kind, extra=daemon_args)
        )
        try:
            wait_until_ready(control, daemon, 30)
            endpoint = request(control, {"cmd": "status"})["ingest"][0]
            sampler = RssSampler(daemon.pid)
            sampler.start()
            job = {
                "endpoint": endpoint,
                "kind": "push" if socket_kind == "pull" else "pub",
                "control": control,
                "shape": case.shape,
                "count": case.count,
                "chunk": case.chunk,
            }
            with start_publisher(job) as publisher:
                prefault(case)
                start = time.perf_counter()
                go(publisher)
                ingest, total = follow(control, case, start, quiet)
                publisher.wait(120)
            sampler.stopping.set()
            sampler.join()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(300)
    record: dict[str, Any] = json.loads((root / "bench" / "metadata.json").read_text())["framesink"]
    record["pages"] = count_pages(root / "bench" / record["files"]["tiff"])
    shutil.rmtree(root)
    return record, ingest, total, sampler


def start_publisher(job: dict[str, Any]) -> subprocess.Popen[str]:
    """The publisher process, connected and waiting for ``go``."""
    publisher = subprocess.Popen(
        [sys.executable, __file__, "--publish", json.dumps(job)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert publisher.stdout is not None
    if publisher.stdout.readline().strip() != "ready":
        publisher.kill()
        raise RuntimeError("the publisher did not start")
    return publisher


def go(publisher: subprocess.Popen[str]) -> None:
    assert publisher.stdin is not None
    publisher.stdin.write("go\n")
    publisher.stdin.flush()


def follow(control: str, case: Case, start: float, quiet: bool) -> tuple[float, float]:
    """Poll the daemon: (seconds until every frame was handled, seconds until final)."""
    progress = None if quiet else ProgressBar(case.count, f"{case.name} ")
    handled, ingest = 0, None
    while True:
        entries = [
            a
            for a in request(control, {"cmd": "status"})["acquisitions"]
            if a["acquisition"] == "bench"
        ]
        now = time.perf_counter() - start
        if entries:
            done = entries[0]["frames_written"] + entries[0]["frames_missing"]
            if progress is not None and done > handled:
                progress.update(done - handled)
            handled = max(handled, done)
            if ingest is None and handled >= case.count:
                ingest = now
            if entries[0]["state"] != "open":
                if entries[0]["state"] != "finished":
                    raise RuntimeError(f"acquisition failed: {entries[0]['error']}")
                if progress is not None:
                    progress.close()
                return ingest or now, now
        time.sleep(STATUS_INTERVAL)


def count_pages(path: Path) -> int:
    with tifffile.TiffFile(path) as tiff:
        return len(tiff.pages)


def publish(job: dict[str, Any]) -> None:
    """The publisher process: connect, say ready, wait for go, send all, stop, wait for the ack."""
    height, width = job["shape"]
    pool = frame_pool((height, width))
    chunk = job["chunk"]
    stack = np.concatenate([pool] * (chunk // POOL + 1))[:chunk]
    if job["kind"] == "raw":
        publish_raw(job, pool, stack)
        return
    hwm = 1000 if job["kind"] == "push" else 100_000
    with Publisher(
        job["endpoint"], kind=job["kind"], high_water_mark=hwm, control=job["control"]
    ) as publisher:
        print("ready", flush=True)
        sys.stdin.readline()
        acquisition = publisher.start(
            "bench",
            {"axes": "TYX"},
            output_path="bench",
            output_name="bench",
            dtype="uint16",
            frame_shape=(height, width),
        )
        for first in range(0, job["count"], chunk):
            size = min(chunk, job["count"] - first)
            acquisition.send(stack[:size] if chunk > 1 else pool[first % POOL])
        if job["kind"] == "pub":
            time.sleep(
                0.5
            )  # let PUB's queue drain so that the stop is not dropped at the high-water mark
        acquisition.stop(wait=600)


def publish_raw(
    job: dict[str, Any], pool: np.ndarray[Any, Any], stack: np.ndarray[Any, Any]
) -> None:
    """The same frames as plain two-part PUSH messages, for the minimal pipeline."""
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.connect(job["endpoint"])
    print("ready", flush=True)
    sys.stdin.readline()
    chunk = job["chunk"]
    for first in range(0, job["count"], chunk):
        size = min(chunk, job["count"] - first)
        socket.send_multipart([b"f", stack[:size] if chunk > 1 else pool[first % POOL]], copy=False)
    socket.close(linger=-1)
    context.term()


def minimal_pipeline(folder: Path, case: Case) -> Result:
    """A reference with no framesink code: PULL over tcp, one copy into an aligned
    buffer, an O_DIRECT write (plain write where refused), fsync. What the machine
    allows a separate receiving process, measured in the same run."""
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.RCVHWM, 4)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    job: dict[str, Any] = {"endpoint": f"tcp://127.0.0.1:{port}", "kind": "raw"}
    job |= {"shape": case.shape, "count": case.count, "chunk": case.chunk}
    path = folder / "minimal.bin"
    message_bytes = case.chunk * case.frame_bytes
    raw = np.empty(message_bytes + 4096, np.uint8)
    staging = raw[-raw.ctypes.data % 4096 :][:message_bytes]
    with start_publisher(job) as publisher:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
        except OSError:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        prefault(case)
        start = time.perf_counter()
        go(publisher)
        offset = 0
        while offset < case.count * case.frame_bytes:
            if not socket.poll(30_000):
                raise RuntimeError("the raw publisher stopped sending")
            pixels = np.frombuffer(socket.recv_multipart(copy=False)[1].buffer, np.uint8)
            np.copyto(staging[: pixels.nbytes], pixels)
            offset += os.pwrite(fd, staging[: pixels.nbytes].data, offset)
        os.fsync(fd)
        total = time.perf_counter() - start
        os.close(fd)
        publisher.wait(60)
    socket.close(linger=0)
    context.term()
    path.unlink()
    return make_result(case, "minimal tcp pipeline", total, total)


def framesink_result(
    case: Case, mode: str, run: tuple[dict[str, Any], float, float, RssSampler], reference: float
) -> Result:
    record, ingest, total, sampler = run
    result = make_result(
        case,
        mode,
        ingest,
        total,
        peak_rss_mb=round(sampler.peak / 2**20, 1),
        daemon_cpu_s=round(sampler.cpu_s, 2),
        frames_written=record["frames_written"],
        frames_missing=record["frames_missing"],
        unaccounted=record["pages"] - record["frames_written"] - record["frames_missing"],
    )
    result.ratio = round(result.total_mb_s / reference, 3) if reference else None
    return result


def benchmark_case(
    folder: Path, case: Case, transports: list[str], quiet: bool, daemon_args: list[str]
) -> list[Result]:
    """Baselines interleaved with the framesink runs; each run is compared with its neighbours.

    The disk is shared and its speed drifts, so a framesink run's reference is the mean
    of the baseline just before it and the one just after it.
    """
    results = [baseline(folder, case, "baseline #1")]
    for number, transport in enumerate(transports, start=2):
        if transport == "inproc":
            result = in_process(folder, case, direct_io="--no-direct-io" not in daemon_args)
        elif transport == "minimal":
            result = minimal_pipeline(folder, case)
        else:
            run = run_framesink(
                folder,
                case=case,
                transport=transport,
                socket_kind="pull",
                daemon_args=daemon_args,
                quiet=quiet,
            )
            result = framesink_result(case, f"framesink {transport} pull", run, 0)
        before, after = results[-1], baseline(folder, case, f"baseline #{number}")
        result.ratio = round(result.total_mb_s / ((before.total_mb_s + after.total_mb_s) / 2), 3)
        results += [result, after]
    return results


def in_process(folder: Path, case: Case, direct_io: bool) -> Result:
    """framesink's StreamWriter in the camera's own process: no socket, no daemon."""
    pool = frame_pool(case.shape)
    stack = np.concatenate([pool] * (case.chunk // POOL + 1))[: case.chunk]
    prefault(case)
    start = time.perf_counter()
    writer = StreamWriter(
        folder / "inproc",
        "bench",
        {"axes": "TYX"},
        dtype="uint16",
        frame_shape=case.shape,
        overwrite=True,
        direct_io=direct_io,
    )
    for first in range(0, case.count, case.chunk):
        size = min(case.chunk, case.count - first)
        writer.write(stack[:size] if case.chunk > 1 else pool[first % POOL])
    ingest = time.perf_counter() - start
    record = writer.finalize()
    total = time.perf_counter() - start
    pages = count_pages(folder / "inproc" / record.files.tiff)
    shutil.rmtree(folder / "inproc")
    return make_result(
        case,
        "framesink in-process",
        ingest,
        total,
        frames_written=record.frames_written,
        frames_missing=record.frames_missing,
        unaccounted=pages - record.frames_written - record.frames_missing,
    )


def overload(folder: Path, count: int, quiet: bool) -> Result:
    case = Case("SUB overload 2048x2048 u16", (2048, 2048), count, 1)
    args = ["--queue-bytes", "48MiB", "--fsync-interval", "0.05", "--idle-timeout", "30"]
    return framesink_result(
        case,
        "framesink ipc sub",
        run_framesink(
            folder, case=case, transport="ipc", socket_kind="sub", daemon_args=args, quiet=quiet
        ),
        0,
    )


def median_ratios(results: list[Result]) -> dict[tuple[str, str], float]:
    """Median ratio of each framesink mode over the repeated rounds."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for result in results:
        if result.ratio is not None and result.mode.startswith("framesink"):
            ratios.setdefault((result.case, result.mode), []).append(result.ratio)
    return {key: statistics.median(values) for key, values in ratios.items()}


def goals(results: list[Result]) -> list[str]:
    """The performance goals, each with the figure that decides it (where this run has one)."""
    lines = []
    ratios = median_ratios(results)
    large = ratios.get(("large 2048x2048 u16", "framesink tcp pull"))
    if large is not None:
        verdict = "met" if large >= 0.9 else "NOT met"
        lines.append(f"large frames over tcp >= 0.9x the baseline: median {large:.2f}  {verdict}")
    daemon_runs = [r for r in results if r.peak_rss_mb is not None]
    big = [r for r in daemon_runs if r.total_mb_s * r.total_s >= 5000]
    if big:
        peak_mb = max(r.peak_rss_mb or 0.0 for r in big) * 2**20 / MB
        verdict = "met" if peak_mb <= 200 else "NOT met"
        lines.append(f"daemon peak RSS <= 200 MB over >= 5 GB: max {peak_mb:.0f} MB  {verdict}")
    small = [r for r in daemon_runs if r.case.startswith("small") and r.mode.endswith("pull")]
    if small:
        rate = statistics.median(r.total_frames_s for r in small)
        lost = sum(r.frames - (r.frames_written or 0) for r in small)
        verdict = "met" if rate >= 10_000 and lost == 0 else "NOT met"
        lines.append(
            f"small frames >= 10,000/s over PULL, none lost: median {rate:,.0f}/s, "
            f"{lost} lost  {verdict}"
        )
    for r in (r for r in daemon_runs if r.mode.endswith("sub")):
        exact = r.frames_missing == r.frames - (r.frames_written or 0) and r.unaccounted == 0
        lines.append(
            f"SUB overload, missing == not written: {r.frames_missing} missing, "
            f"{r.frames} - {r.frames_written} not written  {'met' if exact else 'NOT met'}"
        )
    return lines


def table(results: list[Result]) -> str:
    header = (
        "case",
        "mode",
        "frames",
        "ingest MB/s",
        "total MB/s",
        "frames/s",
        "ratio",
        "peak RSS MiB",
        "daemon CPU s",
        "written",
        "missing",
        "unaccounted",
    )
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        optional = [
            r.ratio,
            r.peak_rss_mb,
            r.daemon_cpu_s,
            r.frames_written,
            r.frames_missing,
            r.unaccounted,
        ]
        rows.append(
            (
                r.case,
                r.mode,
                str(r.frames),
                f"{r.ingest_mb_s:.0f}",
                f"{r.total_mb_s:.0f}",
                f"{r.total_frames_s:.0f}",
                *("" if v is None else str(v) for v in optional),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    parser.add_argument("--small-chunk", type=int, default=32, help="small frames per message")
    parser.add_argument(
        "--overload-count", type=int, default=400, help="frames in the SUB overload run (0: skip)"
    )
    parser.add_argument(
        "--transports",
        default="tcp,ipc,inproc,minimal",
        help="comma-separated: tcp, ipc (publisher process -> daemon), inproc (StreamWriter "
        "in the publishing process), minimal (tcp to a receive-copy-write loop with no "
        "framesink code: the machine's ceiling for a separate receiver)",
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
        help="skip touching memory before each run (see prefault() for why it is there)",
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the untimed first baseline"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every case (medians are printed)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    PREFAULT["enabled"] = arguments.prefault
    if arguments.publish:
        publish(json.loads(arguments.publish))
        return 0
    cases = [
        Case("large 2048x2048 u16", (2048, 2048), arguments.large_count, 1),
        Case("small 256x256 u16", (256, 256), arguments.small_count, arguments.small_chunk),
    ]
    folder = Path(tempfile.mkdtemp(prefix="framesink-bench-", dir=arguments.dir))
    results: list[Result] = []
    try:
        if arguments.warmup:
            # The first large write of a run is often much slower (a fresh disk region):
            # one untimed baseline keeps that out of the comparisons.
            baseline(folder, next(c for c in cases if c.count > 0), "warm-up")
        for _ in range(arguments.repeat):
            for case in cases:
                if case.count > 0:
                    results += benchmark_case(
                        folder,
                        case,
                        arguments.transports.split(","),
                        arguments.json,
                        [
                            "--fsync-interval",
                            str(arguments.fsync_interval),
                            "--direct-io" if arguments.direct_io else "--no-direct-io",
                        ],
                    )
        if arguments.overload_count > 0:
            results.append(overload(folder, arguments.overload_count, arguments.json))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if arguments.json:
        print(
            json.dumps(
                {
                    "runs": [asdict(r) for r in results],
                    "median_ratios": {
                        f"{name}: {mode}": ratio
                        for (name, mode), ratio in median_ratios(results).items()
                    },
                    "goals": goals(results),
                },
                indent=2,
            )
        )
    else:
        print(table(results))
        for (name, mode), ratio in median_ratios(results).items():
            print(f"median ratio over {arguments.repeat} round(s): {name}, {mode}: {ratio:.3f}")
        print("\ngoals:")
        for line in goals(results):
            print(f"  {line}")
        print(
            "\nratio: total MB/s over the mean of the baselines run just before and after it.\n"
            "unaccounted: pages that are neither written frames nor listed missing (must be 0)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
