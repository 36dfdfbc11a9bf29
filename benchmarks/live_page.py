"""The live page must not cost the write path: the daemon's CPU per GB with its page
open and polled, against the same run without the HTTP endpoint.

A viewer thread plays a browser with the page open: every 0.5 s it fetches
``/api/status`` and the open acquisition's ``latest.png`` (the page itself polls once a
second). Rounds alternate (without, with, without, ...); each round with the page is
compared with the mean of the rounds around it.
"""

from __future__ import annotations

import statistics
import threading
import urllib.error
import urllib.request

from .cases import Case, Options
from .compressed import CompressedRun, DaemonRound, with_rounds

POLL_INTERVAL = 0.5
PAGE = ("--metrics", "127.0.0.1:0")


class PageViewer:
    """Polls the page's status and thumbnail until ``stop`` (does nothing without a URL);
    counts the answers it got, so a round whose page was never fetched shows."""

    def __init__(self, metrics_url: str | None) -> None:
        self.base = None if metrics_url is None else metrics_url.removesuffix("/metrics")
        self.statuses = 0
        self.thumbnails = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        if self.base is not None:
            self._thread.start()

    def _poll(self) -> None:
        base = self.base
        assert base is not None
        while True:
            self.statuses += self._fetch(base + "/api/status")
            self.thumbnails += self._fetch(base + "/acquisitions/bench/latest.png")
            if self._stopping.wait(POLL_INTERVAL):
                return

    @staticmethod
    def _fetch(url: str) -> int:
        """1 when the URL answered (a thumbnail answers 404 before the first frame)."""
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
                return 1
        except (urllib.error.URLError, OSError):
            return 0

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()


def _round(
    options: Options, case: Case, page: bool, run_daemon: DaemonRound
) -> tuple[CompressedRun, tuple[int, int]]:
    """One round; with the page, what the viewer fetched (statuses, thumbnails)."""
    args = (*options.daemon_args, *(PAGE if page else ()))
    run = run_daemon(options, case, "shm", "pull", args, frames="random")
    if run.record.frames_written != case.count:
        raise RuntimeError(f"framesink wrote {run.record.frames_written} of {case.count} frames")
    if page and run.page_fetches[0] == 0:
        raise RuntimeError("the viewer never reached the page: the round measured nothing")
    measured = CompressedRun(
        "page" if page else "none", run.total_s, run.cpu_s, run.image_bytes, run.peak_rss / 2**20
    )
    return measured, run.page_fetches


def compare(options: Options, case: Case, *, rounds: int, run_daemon: DaemonRound) -> str:
    runs = [_round(options, case, False, run_daemon)[0]]
    ratios, extra_cpu = [], []
    statuses = thumbnails = 0
    for _ in range(rounds):
        watched, (fetched_statuses, fetched_thumbnails) = _round(options, case, True, run_daemon)
        statuses, thumbnails = statuses + fetched_statuses, thumbnails + fetched_thumbnails
        after = _round(options, case, False, run_daemon)[0]
        before = runs[-1]
        reference = (before.cpu_s_per_gb(case) + after.cpu_s_per_gb(case)) / 2
        ratios.append(watched.cpu_s_per_gb(case) / reference)
        unwatched_cpu_s = reference * case.total_bytes / 1e9
        extra_cpu.append((watched.cpu_s - unwatched_cpu_s) / watched.total_s * 1000)
        runs += [watched, after]

    def median_of(name: str, value: str) -> float:
        group = [run for run in runs if run.writer == name]
        if value == "cpu":
            return statistics.median(run.cpu_s_per_gb(case) for run in group)
        return statistics.median(run.mb_s(case) for run in group)

    rows = [
        f"  {label:<22}{median_of(name, 'cpu'):10.3f}{median_of(name, 'mb'):9.1f}"
        for name, label in (("none", "no HTTP endpoint"), ("page", "page polled 2x/s"))
    ]
    return "\n".join(
        [
            f"live page, {case.name}, {case.count} frames through shared memory; "
            f"medians of {rounds} interleaved rounds",
            f"  {'daemon':<22}{'CPU s/GB':>10}{'MB/s':>9}",
            *rows,
            f"  CPU per GB, page polled / none: {with_rounds(ratios)}",
            f"  the page's cost in the daemon: {statistics.median(extra_cpu):.1f} ms of CPU per "
            "second watched (the viewer's polling, not the frames: the same at any frame rate)",
            f"  the viewer fetched {statuses} statuses and {thumbnails} thumbnails",
        ]
    )
