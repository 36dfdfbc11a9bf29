"""The benchmark script runs end to end and reports figures that add up (not their speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]


def run_bench(tmp_path: Path, *options: str) -> list[str]:
    """Run ``python -m benchmarks`` writing under ``tmp_path``; its stdout lines."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--dir", str(tmp_path), "--no-warmup", "--no-prefault", *options],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPOSITORY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_bench_runs_every_mode_and_accounts_for_every_frame(tmp_path: Path) -> None:
    lines = run_bench(
        tmp_path, "--large-count", "3", "--small-count", "70", "--small-chunk", "32",
        "--overload-count", "12", "--transports", "tcp,ipc,shm,inproc,minimal,minimal-shm",
        "--json",
    )  # fmt: skip
    report = json.loads("\n".join(lines))
    modes = [(run["case"], run["mode"]) for run in report["runs"]]
    for case in ("large 2048x2048 u16", "small 256x256 u16"):
        for mode in (
            "framesink tcp pull",
            "framesink ipc pull",
            "framesink shm pull",
            "framesink in-process",
        ):
            assert (case, mode) in modes
            assert f"{case}: {mode}" in report["median_ratios"]
        assert [m for c, m in modes if c == case].count("baseline #7") == 1
        assert (case, "minimal tcp pipeline") in modes
        (ceiling,) = [
            run
            for run in report["runs"]
            if (run["case"], run["mode"]) == (case, "minimal shm pipeline")
        ]
        assert ceiling["cpu_s_per_gb"] > 0
    assert any("minimal shm pipeline: " in goal for goal in report["goals"])
    for run in report["runs"]:
        assert run["total_mb_s"] > 0
        if run["mode"].startswith("framesink") and run["mode"].endswith(("pull", "process")):
            assert (run["frames_written"], run["frames_missing"], run["unaccounted"]) == (
                run["frames"],
                0,
                0,
            )
    (overload,) = [run for run in report["runs"] if run["mode"] == "framesink ipc sub"]
    assert overload["frames_written"] + overload["frames_missing"] == 12
    assert overload["unaccounted"] == 0
    assert any(
        goal.startswith("SUB overload") and goal.endswith(" met") for goal in report["goals"]
    )
    assert not list(tmp_path.iterdir()), "the bench leaves its files behind"


def test_the_compression_bench_compares_framesink_with_tifffile(tmp_path: Path) -> None:
    """The compressed run writes the same bytes as tifffile (same codec, level,
    predictor and strips) and prints the codec's limit and the ratios."""
    lines = run_bench(tmp_path, "--compression", "zstd", "--large-count", "6", "--repeat", "1")
    assert "zstd level 1" in lines[0]
    assert any("codec on one core" in line for line in lines)
    (size,) = [line for line in lines if "file size / tifffile's" in line]
    assert 0.9 <= float(size.rsplit(" ", 1)[1]) <= 1.1
    assert any(line.strip().startswith("framesink shm") for line in lines)


def test_the_ome_zarr_bench_compares_with_acquire_zarr_and_ome_tiff(tmp_path: Path) -> None:
    """Both Zarr writers store the same bytes (same chunks, shards and codec); every
    writer's row and both ratios are printed."""
    lines = run_bench(tmp_path, "--ome-zarr", "--large-count", "16", "--repeat", "1")
    rows = {
        name: line.split()[-3]
        for line in lines
        for name in ("acquire-zarr", "framesink zarr lz4")
        if line.strip().startswith(name + " ")
    }
    assert rows["acquire-zarr"] == rows["framesink zarr lz4"], "the same MB on disk"
    assert any("/ acquire-zarr blosc-lz4" in line for line in lines)
    assert any("/ framesink OME-TIFF, uncompressed" in line for line in lines)


def test_the_live_page_bench_compares_with_and_without_a_viewer(tmp_path: Path) -> None:
    """Rounds with the page are compared with rounds without; the viewer really fetched."""
    lines = run_bench(tmp_path, "--live-page", "--large-count", "16", "--repeat", "1")
    assert any(line.strip().startswith("no HTTP endpoint ") for line in lines)
    assert any(line.strip().startswith("page polled 2x/s ") for line in lines)
    assert any("page polled / none: " in line for line in lines)
    (fetched,) = [line for line in lines if "the viewer fetched" in line]
    assert int(fetched.split()[3]) > 0, fetched
