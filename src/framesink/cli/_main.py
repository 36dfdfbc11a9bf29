"""The ``framesink`` command: serve, status, stop, abort, recover, read, demo, keys."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core import SUPPORTED_DTYPES, FramesinkError, __version__
from ..daemon import Daemon, Settings, StartupError, load_settings
from ..formats import open_acquisition, recover
from ..store import RecoveryError
from ..transport import (
    ClientKeys,
    ControlClient,
    ControlError,
    CurveError,
    parse_status,
    write_certificates,
)
from ._demo import run_demo
from ._logs import configure_logging
from ._statusview import render_status

log = logging.getLogger("framesink")
DESCRIPTION = (
    "framesink writes camera frames published over ZeroMQ to OME-TIFF files. "
    "Run `framesink demo` to see it work end to end."
)


def _parser() -> tuple[argparse.ArgumentParser, Mapping[str, argparse.ArgumentParser]]:
    """The command's parser and each subcommand's own (for its usage on an error)."""
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
    serve.add_argument(
        "--format", help="storage format of a start that names none: ome-tiff or ome-zarr"
    )
    serve.add_argument(
        "--compression",
        help="codec of a start that names none: none, zstd, deflate "
        "(OME-Zarr also blosc-lz4, blosc-zstd)",
    )
    serve.add_argument(
        "--compression-level", type=int, help="its level (zstd 1-22, deflate 1-12; default 1)"
    )
    serve.add_argument(
        "--chunk-shape",
        type=_pair,
        metavar="ROWS,COLUMNS",
        help="OME-Zarr: rows and columns of a frame per chunk (default: about 1 MiB of rows)",
    )
    serve.add_argument(
        "--shard-frames",
        type=_positive,
        help="OME-Zarr: frames a shard aims to hold (default: about 128 MiB a shard)",
    )
    serve.add_argument(
        "--curve-server-key",
        type=Path,
        help="the daemon's CURVE certificate (NAME.key_secret); requires --curve-clients",
    )
    serve.add_argument(
        "--curve-clients", type=Path, help="directory of allowed clients' certificates (*.key)"
    )
    serve.add_argument("--metrics", help="HOST:PORT for Prometheus metrics, e.g. 127.0.0.1:9464")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text lines, or one JSON object a line for log collectors (default text)",
    )

    status = commands.add_parser("status", help="show a running daemon's status")
    _control_arguments(status)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")

    for how in ("stop", "abort"):
        end = commands.add_parser(
            how,
            help=f"{how} an open acquisition (as its publisher's {how} message would)",
        )
        end.add_argument("acquisition", help="the acquisition id (see framesink status)")
        _control_arguments(end)
        end.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="seconds to wait for its files to be final (default 60; 0: do not wait)",
        )

    keys = commands.add_parser("keys", help="write a CURVE certificate pair")
    keys.add_argument("name", help="writes NAME.key (public) and NAME.key_secret (0600)")
    keys.add_argument("--dir", type=Path, default=Path(), help="where (default: here)")

    rec = commands.add_parser("recover", help="recover interrupted acquisitions")
    rec.add_argument("path", type=Path, help="an acquisition folder or a whole data root")

    read = commands.add_parser("read", help="summarize an acquisition, finished or running")
    read.add_argument("path", type=Path, help="an acquisition's folder or its image")
    read.add_argument("--json", action="store_true", help="print the summary as JSON")

    demo = commands.add_parser("demo", help="run a daemon and the synthetic camera once")
    demo.add_argument(
        "-d", "--data-root", type=Path, help="where to write (default: a new temporary folder)"
    )
    demo.add_argument(
        "--frames", type=_positive, default=200, help="frames to acquire (default 200)"
    )
    demo.add_argument(
        "--shape",
        type=_positive,
        nargs=2,
        default=[512, 512],
        metavar=("Y", "X"),
        help="frame height and width in pixels (default 512 512)",
    )
    demo.add_argument(
        "--dtype",
        default="uint16",
        choices=sorted(SUPPORTED_DTYPES),
        help="pixel type (default uint16)",
    )
    demo.add_argument(
        "--rate", type=float, default=100.0, help="frames per second (0: as fast as possible)"
    )
    demo.add_argument(
        "--curve", action="store_true", help="authenticate with fresh CURVE keys (a secured run)"
    )
    demo.add_argument(
        "--compression",
        choices=["none", "zstd", "deflate", "blosc-lz4", "blosc-zstd"],
        help="compress the pixels (default none; blosc: OME-Zarr only)",
    )
    demo.add_argument(
        "--format",
        choices=["ome-tiff", "ome-zarr"],
        help="storage format (default ome-tiff)",
    )
    return parser, commands.choices


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {number}")
    return number


def _pair(text: str) -> tuple[int, int]:
    """An argparse type: two whole numbers of at least 1, as ``ROWS,COLUMNS``."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"give two numbers as ROWS,COLUMNS; got {text!r}")
    rows, columns = (_positive(part.strip()) for part in parts)
    return rows, columns


def main(argv: Sequence[str] | None = None) -> int:
    parser, subcommands = _parser()
    arguments, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's own usage, not the top level's
        subcommands[arguments.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    handler = {
        "serve": _serve,
        "status": _status,
        "recover": _recover,
        "read": _read,
        "demo": _demo,
        "keys": _keys,
        "stop": _end,
        "abort": _end,
    }[arguments.command]
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
        "format": arguments.format,
        "compression": arguments.compression,
        "compression_level": arguments.compression_level,
        "chunk_shape": arguments.chunk_shape,
        "shard_frames": arguments.shard_frames,
        "curve_server_key": arguments.curve_server_key,
        "curve_clients": arguments.curve_clients,
        "metrics": arguments.metrics,
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
        daemon = Daemon(settings)
    except CurveError as exc:
        print(f"framesink: bad CURVE setup: {exc}", file=sys.stderr)
        return 2
    try:
        daemon.run()
    except StartupError as exc:
        print(f"framesink: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception:
        log.exception("framesink stopped on an error")
        return 1
    return 0


def _control_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a running daemon takes."""
    parser.add_argument(
        "--control", help="control endpoint (default: from the config file/environment, as serve)"
    )
    parser.add_argument("-c", "--config", help="config file to read the control endpoint from")
    parser.add_argument("--curve-client-key", type=Path, help="this client's NAME.key_secret")
    parser.add_argument(
        "--curve-server-public-key", type=Path, help="the daemon's public certificate NAME.key"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)"
    )


def _control_client(arguments: argparse.Namespace) -> ControlClient:
    """A client of the daemon the arguments name (SystemExit 2 on a bad configuration)."""
    try:
        settings = load_settings(
            arguments.config,
            curve_client_key=arguments.curve_client_key,
            curve_server_public_key=arguments.curve_server_public_key,
        )
        keys = _status_keys(settings)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"framesink: bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    control = arguments.control or settings.control
    return ControlClient(control, timeout=arguments.timeout, keys=keys)


def _unreachable(client: ControlClient, exc: ControlError) -> int:
    hint = "check --control" + ("" if client.keys else "; a CURVE daemon needs --curve-client-key")
    print(f"framesink: {exc} (is the daemon running? {hint})", file=sys.stderr)
    return 1


def _status(arguments: argparse.Namespace) -> int:
    client = _control_client(arguments)
    try:
        reply = client.request({"cmd": "status"})
        status = parse_status(reply, client.endpoint)
    except ControlError as exc:
        return _unreachable(client, exc)
    print(json.dumps(reply, indent=2) if arguments.json else render_status(status))
    return 0


def _end(arguments: argparse.Namespace) -> int:
    """framesink stop|abort ID: end an open acquisition, then wait for its files."""
    client = _control_client(arguments)
    name, how = arguments.acquisition, arguments.command
    try:
        reply = client.request({"cmd": how, "acquisition": name})
    except ControlError as exc:
        return _unreachable(client, exc)
    if not reply.get("ok"):
        print(f"framesink: cannot {how} {name!r}: {reply.get('error')}", file=sys.stderr)
        return 1
    if arguments.wait <= 0:
        print(f"{how} {name}: sent")
        return 0
    try:
        entry = client.wait_for_acquisition(name, arguments.wait)
    except ControlError as exc:
        print(f"framesink: {exc}", file=sys.stderr)
        return 1
    print(f"{how} {name}: {entry.state.value}, {entry.frames_written} frames -> {entry.path}")
    return 0


def _status_keys(settings: Settings) -> ClientKeys | None:
    """The CURVE keys for the status command, or None when it has no client key."""
    if settings.curve_client_key is None:
        return None
    server = settings.curve_server_public_key or settings.curve_server_key
    if server is None:
        raise CurveError("curve_client_key needs curve_server_public_key (the daemon's NAME.key)")
    return ClientKeys.load(server, settings.curve_client_key)


def _keys(arguments: argparse.Namespace) -> int:
    try:
        public, secret = write_certificates(arguments.name, arguments.dir)
    except (CurveError, OSError) as exc:
        print(f"framesink: {exc}", file=sys.stderr)
        return 1
    print(f"public key (give it to the other side): {public}")
    print(f"secret key (keep it here, mode 0600):   {secret}")
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


def _read(arguments: argparse.Namespace) -> int:
    configure_logging("WARNING", "text")
    try:
        with open_acquisition(arguments.path) as acquisition:
            summary = acquisition.summary()
    except (FramesinkError, OSError) as exc:
        print(f"framesink: {exc}", file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(summary, indent=2))
        return 0
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _demo(arguments: argparse.Namespace) -> int:
    configure_logging("WARNING", "text")
    return run_demo(
        arguments.data_root,
        arguments.frames,
        tuple(arguments.shape),
        arguments.dtype,
        arguments.rate or None,
        curve=arguments.curve,
        compression=arguments.compression,
        image_format=arguments.format,
    )
