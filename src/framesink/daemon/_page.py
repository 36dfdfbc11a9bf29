"""The daemon's HTTP endpoint beside ``/metrics``: the live page, its JSON and thumbnails.

``/`` is a plain page (HTML, CSS and a little JavaScript, no external assets) that
polls ``/api/status`` and reloads each open acquisition's thumbnail,
``/acquisitions/<id>/latest.png``, when it changes. Everything is read from the same
status the control endpoint answers, and from the writer threads' latest-frame taps.

With CURVE on, acquisition names and paths may be private: unless the operator allows
them (``live_page_names``), the status is served with each acquisition named by an
opaque token (stable for the daemon's life) and its path, errors and details left out.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from importlib.resources import files
from typing import Any
from urllib.parse import unquote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import numpy as np

from ..core import AcquisitionEntry, DaemonStatus
from ._tap import thumbnail_png

log = logging.getLogger(__name__)

LatestLookup = Callable[[str], np.ndarray[Any, Any] | None]
PAGE = files(__package__).joinpath("_page.html").read_bytes()
_PNG_PREFIX = "/acquisitions/"
_PNG_SUFFIX = "/latest.png"


class LivePage:
    """A WSGI application: the page, ``/api/status``, thumbnails; the rest to ``fallback``."""

    def __init__(
        self,
        status: Callable[[], DaemonStatus],
        latest: LatestLookup,
        fallback: WSGIApplication,
        *,
        show_names: bool,
    ) -> None:
        self._status = status
        self._latest = latest
        self._fallback = fallback
        self._names = None if show_names else _Tokens()

    def __call__(self, environ: WSGIEnvironment, start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/", "/index.html"):
            return _reply(start, "200 OK", "text/html; charset=utf-8", PAGE)
        if path == "/api/status":
            body = json.dumps(self.status_document()).encode()
            return _reply(start, "200 OK", "application/json", body)
        if path.startswith(_PNG_PREFIX) and path.endswith(_PNG_SUFFIX):
            return self._thumbnail(unquote(path[len(_PNG_PREFIX) : -len(_PNG_SUFFIX)]), start)
        return self._fallback(environ, start)

    def status_document(self) -> dict[str, Any]:
        """The control status as JSON (names replaced by tokens when they are private)."""
        status = self._status()
        if self._names is not None:
            status = self._names.redact(status)
        return status.model_dump(mode="json")

    def _thumbnail(self, name: str, start: StartResponse) -> Iterable[bytes]:
        acquisition = name if self._names is None else self._names.acquisition_of(name)
        frame = None if acquisition is None else self._latest(acquisition)
        if frame is None:
            return _reply(start, "404 Not Found", "text/plain", b"no frame yet\n")
        try:
            png = thumbnail_png(frame)
        except (ValueError, RuntimeError) as exc:
            log.warning("thumbnail of %s could not be encoded: %s", name, exc)
            return _reply(start, "500 Internal Server Error", "text/plain", b"not encoded\n")
        return _reply(start, "200 OK", "image/png", png)


class _Tokens:
    """Opaque, stable names for acquisitions whose real names are private."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def token(self, name: str) -> str:
        with self._lock:
            if name not in self._tokens:
                token = f"acq-{secrets.token_hex(6)}"
                self._tokens[name], self._names[token] = token, name
            return self._tokens[name]

    def acquisition_of(self, token: str) -> str | None:
        with self._lock:
            return self._names.get(token)

    def redact(self, status: DaemonStatus) -> DaemonStatus:
        live = {entry.acquisition for entry in status.acquisitions}
        with self._lock:
            for name in [name for name in self._tokens if name not in live]:
                del self._names[self._tokens.pop(name)]
        return status.model_copy(
            update={
                "acquisitions": [self._entry(entry) for entry in status.acquisitions],
                "recent_errors": [
                    error.model_copy(update={"detail": "", "acquisition": None})
                    for error in status.recent_errors
                ],
                "recovery_failures": [
                    failure.model_copy(update={"folder": "", "error": ""})
                    for failure in status.recovery_failures
                ],
                "data_root": "",
            }
        )

    def _entry(self, entry: AcquisitionEntry) -> AcquisitionEntry:
        return entry.model_copy(
            update={"acquisition": self.token(entry.acquisition), "path": "", "error": None}
        )


def _reply(start: StartResponse, status: str, kind: str, body: bytes) -> list[bytes]:
    start(
        status,
        [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]
