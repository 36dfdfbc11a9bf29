"""The daemon's signals, in one place: SIGTERM and SIGINT drain and stop, SIGHUP reloads.

Handlers are installed only in the main thread (a daemon run from a test's thread
leaves the process's handlers alone) and restored when the daemon ends.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP


@contextmanager
def handled_signals(on_stop: Callable[[], None], on_reload: Callable[[], None]) -> Iterator[None]:
    """While inside, the stop signals call ``on_stop`` and SIGHUP ``on_reload``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, _frame: FrameType | None) -> None:
        log.info("received %s: draining and finalizing", signal.Signals(number).name)
        on_stop()

    def reload(_number: int, _frame: FrameType | None) -> None:
        on_reload()

    previous: dict[int, Any] = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    previous[RELOAD_SIGNAL] = signal.signal(RELOAD_SIGNAL, reload)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
