"""Render the daemon status for people."""

from __future__ import annotations

from typing import Any


def _size(nbytes: float | None) -> str:
    if nbytes is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def render_status(status: dict[str, Any]) -> str:
    """A readable summary: daemon line, acquisitions table, counters, recent errors."""
    return "\n".join(
        [
            *_daemon_lines(status),
            "",
            *_acquisition_lines(status.get("acquisitions", [])),
            "",
            *_counter_lines(status.get("counters", {})),
            *_error_lines(status.get("recent_errors") or []),
        ]
    )


def _daemon_lines(status: dict[str, Any]) -> list[str]:
    return [
        f"framesink {status.get('version')}  state={status.get('state')}  "
        f"uptime={status.get('uptime_s', 0):.0f}s  socket={status.get('socket')}  "
        f"queue={_size(status.get('queued_bytes'))}/{_size(status.get('queue_limit_bytes'))}  "
        f"free={_size(status.get('free_bytes'))}"
        + ("  recovering interrupted acquisitions" if status.get("recovering") else ""),
        f"ingest: {', '.join(status.get('ingest', []))}   data root: {status.get('data_root')}",
    ]


def _acquisition_lines(acquisitions: list[dict[str, Any]]) -> list[str]:
    if not acquisitions:
        return ["no acquisitions yet"]
    rows = [
        ("ACQUISITION", "STATE", "WRITTEN", "MISSING", "DROPPED", "RATE/s", "REASON", "IO", "PATH")
    ]
    for entry in acquisitions:
        rate = entry.get("frames_per_s")
        rows.append(
            (
                str(entry["acquisition"]),
                str(entry["state"]),
                str(entry["frames_written"]),
                str(entry["frames_missing"]),
                str(entry["frames_dropped"]),
                "-" if rate is None else f"{rate:.0f}",
                str(entry.get("reason") or "-"),
                "direct" if entry.get("direct_io") else "cache",
                str(entry["path"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
    lines += [f"  ! {e['acquisition']}: {e['error']}" for e in acquisitions if e.get("error")]
    return lines


def _counter_lines(counters: dict[str, Any]) -> list[str]:
    groups: dict[str, list[str]] = {"messages:": [], "frames:": [], "acquisitions:": []}
    for key, value in counters.items():
        if isinstance(value, dict):
            continue
        if key.startswith("acquisitions"):
            group = "acquisitions:"
        elif key.startswith(("frames", "bytes")):
            group = "frames:"
        else:
            group = "messages:"
        groups[group].append(f"{key}={value}")
    lines = [f"{group:14s}" + "  ".join(items) for group, items in groups.items()]
    by_reason = counters.get("rejected_by_reason") or {}
    if by_reason:
        lines.append(
            f"{'rejected:':14s}" + "  ".join(f"{k}={v}" for k, v in sorted(by_reason.items()))
        )
    return lines


def _error_lines(errors: list[dict[str, Any]]) -> list[str]:
    if not errors:
        return []
    return ["recent errors:"] + [
        f"  {e['time']} {e['reason']}"
        + (f" [{e['acquisition']}]" if e.get("acquisition") else "")
        + f": {e['detail']}"
        for e in errors[-5:]
    ]
