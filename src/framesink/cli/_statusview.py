"""Render the daemon status for people."""

from __future__ import annotations

from ..core import AcquisitionEntry, CounterValues, DaemonStatus, Rejection, printable


def _size(nbytes: float | None) -> str:
    if nbytes is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def render_status(status: DaemonStatus) -> str:
    """A readable summary: daemon line, acquisitions table, counters, recent errors."""
    return "\n".join(
        [
            *_daemon_lines(status),
            "",
            *_acquisition_lines(status.acquisitions),
            "",
            *_counter_lines(status.counters),
            *_error_lines(status.recent_errors),
        ]
    )


def _daemon_lines(status: DaemonStatus) -> list[str]:
    return [
        f"framesink {status.version}  state={status.state.value}  "
        f"uptime={status.uptime_s:.0f}s  socket={status.socket}  "
        f"queue={_size(status.queued_bytes)}/{_size(status.queue_limit_bytes)}  "
        f"free={_size(status.free_bytes)}"
        + ("  recovering interrupted acquisitions" if status.recovering else ""),
        f"ingest: {', '.join(status.ingest)}   data root: {status.data_root}",
        *(
            f"  ! could not recover {printable(failure.folder)}: {printable(failure.error)}"
            for failure in status.recovery_failures
        ),
    ]


def _acquisition_lines(acquisitions: list[AcquisitionEntry]) -> list[str]:
    if not acquisitions:
        return ["no acquisitions yet"]
    rows = [
        ("ACQUISITION", "STATE", "WRITTEN", "MISSING", "DROPPED", "RATE/s", "REASON", "IO", "PATH")
    ]
    for entry in acquisitions:
        rate = entry.frames_per_s
        rows.append(
            (
                printable(entry.acquisition),
                entry.state.value,
                str(entry.frames_written),
                str(entry.frames_missing),
                str(entry.frames_dropped),
                "-" if rate is None else f"{rate:.0f}",
                entry.reason.value if entry.reason else "-",
                ("direct" if entry.direct_io else "cache")
                + ("" if entry.compression == "none" else f",{entry.compression.value}"),
                printable(entry.path),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
    lines += [
        f"  ! {printable(e.acquisition)}: {printable(e.error)}" for e in acquisitions if e.error
    ]
    return lines


def _counter_lines(counters: CounterValues) -> list[str]:
    groups: dict[str, list[str]] = {"messages:": [], "frames:": [], "acquisitions:": []}
    for key, value in counters.model_dump(exclude={"rejected_by_reason"}).items():
        if key.startswith("acquisitions"):
            group = "acquisitions:"
        elif key.startswith(("frames", "bytes")):
            group = "frames:"
        else:
            group = "messages:"
        groups[group].append(f"{key}={value}")
    lines = [f"{group:14s}" + "  ".join(items) for group, items in groups.items()]
    by_reason = counters.rejected_by_reason
    if by_reason:
        lines.append(
            f"{'rejected:':14s}" + "  ".join(f"{k}={v}" for k, v in sorted(by_reason.items()))
        )
    return lines


def _error_lines(errors: list[Rejection]) -> list[str]:
    if not errors:
        return []
    return ["recent errors:"] + [
        f"  {e.time} {e.reason}"
        + (f" [{printable(e.acquisition)}]" if e.acquisition else "")
        + f": {printable(e.detail)}"
        for e in errors[-5:]
    ]
