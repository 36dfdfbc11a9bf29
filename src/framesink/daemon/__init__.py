"""The daemon: receive loop, writer sessions, counters, settings, and launching it.

It wires the IO adapters (:mod:`framesink.tiff`, :mod:`framesink.transport`) around
the pure core; the front end (:mod:`framesink.cli`) runs it.
"""

from ._launch import serve_command, wait_until_ready
from ._service import Daemon
from ._settings import Settings, load_settings
from ._startup import StartupError

__all__ = [
    "Daemon",
    "Settings",
    "StartupError",
    "load_settings",
    "serve_command",
    "wait_until_ready",
]
