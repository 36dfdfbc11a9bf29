"""CURVE authentication of the daemon's ingest and control endpoints.

Everything is read and checked when the daemon is built, so a bad key setup stops it
before it binds anything; SIGHUP reloads the allowed clients.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq

from ..transport import Certificate, ClientGate, CurveError, RefusalHandler, load_certificate
from ..transport import load_allowed_clients as check_clients
from ._settings import Settings

log = logging.getLogger(__name__)


class Security:
    """The daemon's certificate and its gate of allowed clients (or nothing, when off)."""

    def __init__(self, settings: Settings) -> None:
        self.certificate: Certificate | None = None
        self._clients = settings.curve_clients
        self._admins_folder = settings.curve_admins
        self._admins: frozenset[bytes] = frozenset()
        self._gate: ClientGate | None = None
        if settings.curve_server_key is not None:
            self.certificate = load_certificate(settings.curve_server_key, secret=True)
            assert self._clients is not None
            check_clients(self._clients)
            if self._admins_folder is not None:
                self._admins = check_clients(self._admins_folder)

    @property
    def enabled(self) -> bool:
        return self.certificate is not None

    def start(self, context: zmq.Context[Any], on_refused: RefusalHandler) -> None:
        """Start the ZAP handler; call before any secured socket binds."""
        if self._clients is None:
            return
        self._gate = ClientGate(context, self._clients, on_refused)
        self._gate.start()
        log.info("CURVE on: %d allowed client keys in %s", len(self._gate.allowed), self._clients)

    def is_admin(self, sender: str | None) -> bool:
        """Whether ``sender`` may stop and abort any acquisition (not only its own)."""
        return sender is not None and sender.encode() in self._admins

    def allows(self, sender: str) -> bool:
        """Whether the authenticated key ``sender`` (z85) is allowed now."""
        return self._gate is None or sender.encode() in self._gate.allowed

    def reload(self) -> frozenset[bytes]:
        """Re-read the allowed clients (SIGHUP); a broken directory keeps the old keys.
        Return the keys removed (their connections stay open: the caller refuses them)."""
        if self._gate is None:
            log.info("SIGHUP: CURVE is off, nothing to reload")
            return frozenset()
        before = self._gate.allowed
        try:
            count = self._gate.reload()
            if self._admins_folder is not None:
                self._admins = check_clients(self._admins_folder)
        except CurveError as exc:
            log.error("SIGHUP: kept the previous client keys: %s", exc)
            return frozenset()
        removed = before - self._gate.allowed
        log.info("SIGHUP: reloaded %d allowed client keys from %s", count, self._clients)
        for key in sorted(removed):
            log.warning(
                "SIGHUP: client key %s removed: its open acquisitions end now and its "
                "messages are refused, also on connections it already has",
                key.decode(errors="replace"),
            )
        return removed

    def stop(self) -> None:
        if self._gate is not None:
            self._gate.stop()
            self._gate = None
