"""The human status table."""

from __future__ import annotations

from framesink.cli import render_status
from framesink.core import DaemonStatus

ENTRY_DEFAULTS = {
    "bytes_written": 0,
    "messages_lost": 0,
    "queued_bytes": 0,
    "frames_discarded_after_error": 0,
    "started": "2026-12-02T00:00:00.000+00:00",
    "complete": False,
    "direct_io": False,
}


def test_status_table_shows_acquisitions_errors_and_counters() -> None:
    raw = {
        "version": "1.0.0",
        "state": "running",
        "uptime_s": 12.0,
        "socket": "pull",
        "queued_bytes": 2048,
        "queue_limit_bytes": 64 << 20,
        "free_bytes": 5 << 30,
        "ingest": ["tcp://127.0.0.1:5555"],
        "data_root": "/data",
        "acquisitions": [
            {
                "acquisition": "run-2",
                "state": "open",
                "frames_written": 7,
                "frames_missing": 1,
                "frames_dropped": 0,
                "frames_per_s": 9.5,
                "reason": None,
                "path": "/data/b/x.ome.tiff.partial",
                "error": None,
                "direct_io": True,
            },
            {
                "acquisition": "run-1",
                "state": "failed",
                "frames_written": 3,
                "frames_missing": 0,
                "frames_dropped": 2,
                "frames_per_s": None,
                "reason": "error",
                "path": "/data/a/x.ome.tiff",
                "error": "disk full",
            },
        ],
        "counters": {
            "messages": 20,
            "bad_messages": 1,
            "frames_written": 10,
            "acquisitions_failed": 1,
            "rejected_by_reason": {"bad_start": 1},
        },
        "recent_errors": [
            {"time": "T", "reason": "bad_start", "acquisition": "run-3", "detail": "dtype: ..."}
        ],
    }
    raw["recovering"] = False
    raw["acquisitions"] = [ENTRY_DEFAULTS | entry for entry in raw["acquisitions"]]  # type: ignore[attr-defined]
    status = DaemonStatus.model_validate(raw)
    lines = render_status(status).splitlines()
    assert lines[0].startswith(
        "framesink 1.0.0  state=running  uptime=12s  socket=pull  queue=2.0 KiB/64.0 MiB  free=5.0 GiB"
    )
    header = next(line for line in lines if line.startswith("ACQUISITION"))
    row = next(line for line in lines if line.startswith("run-2"))
    assert row.split() == [
        "run-2",
        "open",
        "7",
        "1",
        "0",
        "10",
        "-",
        "direct",
        "/data/b/x.ome.tiff.partial",
    ]
    failed = next(line for line in lines if line.startswith("run-1"))
    assert failed.split()[-2:] == ["cache", "/data/a/x.ome.tiff"]
    assert header.index("WRITTEN") == row.index("7")
    assert "  ! run-1: disk full" in lines
    assert (
        "messages:     messages=20  bad_messages=1  orphan_messages=0  late_messages=0  "
        "duplicate_starts=0  seq_gaps=0  peer_disconnects=0  auth_failures=0  rings_refused=0"
    ) in lines
    assert (
        "frames:       frames_received=0  frames_written=10  frames_missing=0  frames_dropped=0  "
        "frames_lost_overload=0  bytes_written=0"
    ) in lines
    assert "rejected:     bad_start=1" in lines
    assert "  T bad_start [run-3]: dtype: ..." in lines
    empty = status.model_copy(update={"acquisitions": []})
    assert render_status(empty).splitlines()[3] == "no acquisitions yet"
    recovering = status.model_copy(update={"recovering": True})
    assert "recovering interrupted acquisitions" in render_status(recovering)
    assert "recovering" not in render_status(status)


def test_a_compressed_acquisition_names_its_codec_in_the_io_column() -> None:
    entry = {
        **ENTRY_DEFAULTS,
        "acquisition": "run-z",
        "state": "open",
        "frames_written": 4,
        "frames_missing": 0,
        "frames_dropped": 0,
        "frames_per_s": 2.0,
        "reason": None,
        "path": "/data/z/x.ome.tiff.partial",
        "error": None,
        "compression": "zstd",
    }
    raw = {
        "version": "1.0.0",
        "state": "running",
        "uptime_s": 1.0,
        "socket": "pull",
        "queued_bytes": 0,
        "queue_limit_bytes": 1 << 20,
        "free_bytes": 1 << 30,
        "ingest": [],
        "data_root": "/data",
        "acquisitions": [entry],
        "counters": {},
        "recovering": False,
        "recent_errors": [],
    }
    lines = render_status(DaemonStatus.model_validate(raw)).splitlines()
    row = next(line for line in lines if line.startswith("run-z"))
    assert row.split()[-2:] == ["cache,zstd", "/data/z/x.ome.tiff.partial"]
