#!/usr/bin/env python3
"""A synthetic camera: publishes a moving test pattern to a framesink daemon.

Example (daemon on the default SUB endpoint):
    python scripts/fake_camera.py --count 500 --rate 50 --shape 1024 1024
"""

from __future__ import annotations

import argparse
import sys
import time

from framesink import Publisher, PublishError
from framesink.cli import SyntheticCamera, publish_synthetic


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and every option's default."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="daemon ingest endpoint")
    parser.add_argument(
        "--kind",
        choices=["pub", "push"],
        default="pub",
        help="socket kind (match the daemon's --socket)",
    )
    parser.add_argument(
        "--bind", action="store_true", help="bind instead of connect (daemon uses --connect)"
    )
    parser.add_argument("--topic", default="camera", help="message topic")
    parser.add_argument("--shape", type=int, nargs="+", default=[512, 512], help="Y X [S]")
    parser.add_argument("--dtype", default="uint16", help="pixel type")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="frames per second (0: as fast as possible)"
    )
    parser.add_argument("--count", type=int, default=1000, help="frames to send")
    parser.add_argument("--chunk", type=int, default=1, help="frames per message")
    parser.add_argument(
        "--acquisition", default=f"synthetic-{int(time.time())}", help="acquisition id"
    )
    parser.add_argument("--output-path", default="synthetic", help="folder under the data root")
    parser.add_argument("--output-name", default="camera", help="file name stem")
    parser.add_argument(
        "--control",
        default="tcp://127.0.0.1:5556",
        help="daemon control endpoint, to wait until the files are final ('' to not wait)",
    )
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the daemon")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        help="seconds the daemon waits between frames before ending the acquisition "
        "(for slow --rate; default: the daemon's idle_timeout)",
    )
    parser.add_argument(
        "--curve-server-key", help="the daemon's public certificate (NAME.key), for CURVE"
    )
    parser.add_argument("--curve-client-key", help="this camera's NAME.key_secret, for CURVE")
    parser.add_argument(
        "--shared-memory",
        type=int,
        help="bytes of a shared-memory ring (same host; needs --control): pixels skip the socket",
    )
    parser.add_argument(
        "--compression", help="codec of the pages: none, zstd, deflate (default: the daemon's)"
    )
    parser.add_argument("--compression-level", type=int, help="the codec's level")
    parser.add_argument(
        "--format", help="storage format: ome-tiff, ome-zarr (default: the daemon's)"
    )
    arguments = parser.parse_args(argv)
    camera = SyntheticCamera(tuple(arguments.shape), arguments.dtype, arguments.rate or None)
    try:
        with Publisher(
            arguments.endpoint,
            kind=arguments.kind,
            bind=arguments.bind,
            topic=arguments.topic,
            control=arguments.control or None,
            curve_server_key=arguments.curve_server_key,
            curve_client_key=arguments.curve_client_key,
            shared_memory=arguments.shared_memory,
        ) as publisher:
            entry = publish_synthetic(
                publisher,
                camera,
                acquisition=arguments.acquisition,
                count=arguments.count,
                output_path=arguments.output_path,
                output_name=arguments.output_name,
                chunk=arguments.chunk,
                wait=arguments.wait if arguments.control else None,
                idle_timeout=arguments.idle_timeout,
                compression=arguments.compression,
                compression_level=arguments.compression_level,
                image_format=arguments.format,
            )
    except PublishError as exc:
        print(f"fake_camera: {exc}", file=sys.stderr)
        return 1
    print(
        f"published {arguments.count} frames as acquisition {arguments.acquisition}",
        file=sys.stderr,
    )
    if entry is not None:
        print(f"daemon wrote {entry.frames_written} frames to {entry.path} ({entry.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
