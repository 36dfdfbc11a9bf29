"""The ``framesink`` command: serve, status, recover, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core import __version__
from ..daemon import Daemon, load_settings
from ..tiff import RecoveryError, recover
from ..transport import ControlClient, ControlError, parse_status
from ._demo import run_demo
from ._logs import configure_logging
from ._statusview import render_status

log = logging.getLogger("framesink")
DESCRIPTION = (
    "framesink writes camera frames published over ZeroMQ to OME-TIFF files. "
    "Run `framesink demo` to see it work end to end."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framesink", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"framesink {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument(
        "-c",
        "--config",
        help="TOML config file (default: $FRAMESINK_CONFIG, /etc/framesink/framesink.toml)",
    )
    serve.add_argument(
        "-d", "--data-root", type=Path, help="folder every acquisition is written under"
    )
    serve.add_argument("-b", "--bind", action="append", help="ingest endpoint to bind (repeatable)")
    serve.add_argument(
        "--connect", action="append", help="ingest endpoint to connect to (repeatable)"
    )
    serve.add_argument("--socket", choices=["sub", "pull"], help="ingest socket kind (default sub)")
    serve.add_argument("--control", help="control endpoint (REP)")
    serve.add_argument(
        "--idle-timeout", type=float, help="seconds before an idle acquisition times out"
    )
    serve.add_argument("--queue-bytes", help="bound on bytes queued for the disk, e.g. 1GiB")
    serve.add_argument("--fsync-interval", type=float, help="seconds between fsyncs")
    serve.add_argument(
        "--direct-io",
        action=argparse.BooleanOptionalAction,
        help="write pixels past the page cache where possible (default on)",
    )
    serve.add_argument(
        "--on-exists", choices=["increment", "error"], help="policy for taken folders"
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    serve.add_argument("--log-format", choices=["text", "json"])

    status = commands.add_parser("status", help="show a running daemon's status")
    status.add_argument(
        "--control", help="control endpoint (default: from the config file/environment, as serve)"
    )
    status.add_argument("-c", "--config", help="config file to read the control endpoint from")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.add_argument("--timeout", type=float, default=5.0)

    rec = commands.add_parser("recover", help="recover interrupted acquisitions")
    rec.add_argument("path", type=Path, help="an acquisition folder or a whole data root")

    demo = commands.add_parser("demo", help="run a daemon and the synthetic camera once")
    demo.add_argument(
        "-d", "--data-root", type=Path, help="where to write (default: a new temporary folder)"
    )
    demo.add_argument("--frames", type=int, default=200)
    demo.add_argument("--shape", type=int, nargs=2, default=[512, 512], metavar=("Y", "X"))
    demo.add_argument("--dtype", default="uint16")
    demo.add_argument(
        "--rate", type=float, default=100.0, help="frames per second (0: as fast as possible)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    handler = {"serve": _serve, "status": _status, "recover": _recover, "demo": _demo}[
        arguments.command
    ]
    return handler(arguments)


def _serve(arguments: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        "data_root": arguments.data_root,
        "bind": arguments.bind,
        "connect": arguments.connect,
        "socket": arguments.socket,
        "control": arguments.control,
        "idle_timeout": arguments.idle_timeout,
        "queue_bytes": arguments.queue_bytes,
        "fsync_interval": arguments.fsync_interval,
        "direct_io": arguments.direct_io,
        "on_exists": arguments.on_exists,
        "log_level": arguments.log_level,
        "log_format": arguments.log_format,
    }
    try:
        settings = load_settings(arguments.config, **overrides)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"framesink: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        Daemon(settings).run()
    except Exception:
        log.exception("framesink stopped on an error")
        return 1
    return 0


def _status(arguments: argparse.Namespace) -> int:
    control = arguments.control
    if control is None:
        try:
            control = load_settings(arguments.config).control
        except (ValidationError, FileNotFoundError, ValueError) as exc:
            print(f"framesink: bad configuration: {exc}", file=sys.stderr)
            return 2
    try:
        reply = ControlClient(control, timeout=arguments.timeout).request({"cmd": "status"})
        status = parse_status(reply, control)
    except ControlError as exc:
        print(f"framesink: {exc} (is the daemon running? check --control)", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2) if arguments.json else render_status(status))
    return 0


def _recover(arguments: argparse.Namespace) -> int:
    configure_logging("INFO", "text")
    try:
        records = recover(arguments.path)
    except RecoveryError as exc:
        print(f"framesink: {exc}", file=sys.stderr)
        return 1
    for record in records:
        print(
            f"recovered {record.acquisition}: {record.frames_written} frames written, "
            f"{record.frames_missing} missing, shape {record.shape}"
        )
    if not records:
        print(f"nothing to recover under {arguments.path}")
    return 0


def _demo(arguments: argparse.Namespace) -> int:
    configure_logging("WARNING", "text")
    return run_demo(
        arguments.data_root,
        arguments.frames,
        tuple(arguments.shape),
        arguments.dtype,
        arguments.rate or None,
    )
