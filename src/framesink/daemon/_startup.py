"""Start-up failures in an operator's words: what could not be done, why, and which
setting to change. The daemon raises StartupError before it has begun to serve; the
front end prints it as one line and exits 1."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from ..core import FramesinkError


class StartupError(FramesinkError, RuntimeError):
    """The daemon cannot start; the message names the cause and the setting."""


@contextmanager
def starting(what: str, setting: str) -> Iterator[None]:
    """Turn a failure of the step ``what`` into a StartupError naming ``setting``."""
    try:
        yield
    except (zmq.ZMQError, OSError) as exc:
        raise StartupError(f"{what}: {_reason(exc)} (setting {setting})") from None


def _reason(exc: zmq.ZMQError | OSError) -> str:
    text = re.sub(r" \(addr='[^']*'\)", "", exc.strerror or str(exc))  # named already
    if exc.errno == errno.EADDRINUSE:
        return f"{text} (is another framesink or another program using it?)"
    if isinstance(exc, zmq.ZMQError) and exc.errno == errno.EINVAL:
        return f"{text} (an endpoint looks like tcp://HOST:PORT or ipc:///path)"
    return text


def prepare_data_root(root: Path) -> None:
    """Create the data root if needed and check that files can be created in it."""
    setting = "data_root, --data-root, FRAMESINK_DATA_ROOT"
    with starting(f"the data root {root} cannot be created", setting):
        root.mkdir(parents=True, exist_ok=True)
    probe = root / f".framesink-probe-{os.getpid()}"
    with starting(f"the data root {root} is not writable", setting):
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)
        os.unlink(probe)


def remove_ipc_files(endpoints: list[str]) -> None:
    """Remove the socket files of ``ipc://`` endpoints this daemon bound and closed
    (libzmq leaves some behind when a context is torn down)."""
    for endpoint in endpoints:
        if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
            path = Path(endpoint.removeprefix("ipc://"))
            with contextlib.suppress(OSError):
                if path.is_socket():
                    path.unlink()
