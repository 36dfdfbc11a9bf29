"""ZeroMQ CURVE: certificates, the allowed-clients gate, and securing sockets.

Certificates are the files ``zmq.auth.create_certificates`` writes: ``NAME.key`` (public)
and ``NAME.key_secret`` (public and secret). Every problem with them stops the daemon at
start with a message naming the file: ``zmq.auth`` alone would only log a bad clients
directory and then deny everyone, silently.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..core import FramesinkError

log = logging.getLogger(__name__)

ZAP_DOMAIN = "framesink"
HANDSHAKE_REFUSED = "no valid CURVE handshake (plain socket or wrong key)"
"""What a refused handshake that never reached the key check is reported as."""
RefusalHandler = Callable[[str, str], None]
"""Called with (peer address, what was refused) for every refused handshake."""


class CurveError(FramesinkError, ValueError):
    """A certificate or the clients directory cannot be used; the message names it."""


@dataclass(frozen=True)
class Certificate:
    """A CURVE key pair (``secret`` is None for a public certificate)."""

    public: bytes
    secret: bytes | None
    path: Path

    def secret_key(self) -> bytes:
        if self.secret is None:
            raise CurveError(f"{self.path} holds no secret key (use the .key_secret file)")
        return self.secret


def load_certificate(path: str | Path, *, secret: bool) -> Certificate:
    """Read one certificate; with ``secret``, it must hold a secret only its owner reads."""
    file = Path(path)
    try:
        public, secret_key = zmq.auth.load_certificate(file)
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read the CURVE certificate {file}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - zmq.auth raises whatever its parser meets
        raise CurveError(f"{file} is not a CURVE certificate: {exc}") from None
    certificate = Certificate(public, secret_key, file)
    if secret:
        certificate.secret_key()
        mode = file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CurveError(
                f"the secret key {file} is readable by others (mode {stat.filemode(mode)}); "
                f"run: chmod 600 {file}"
            )
    return certificate


def load_allowed_clients(directory: str | Path) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``directory`` (at least one)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise CurveError(f"the CURVE clients directory {folder} does not exist")
    keys = {load_certificate(path, secret=False).public for path in sorted(folder.glob("*.key"))}
    if not keys:
        raise CurveError(
            f"the CURVE clients directory {folder} holds no client certificate (*.key): "
            "nobody could connect"
        )
    return frozenset(keys)


def write_certificates(name: str, directory: str | Path) -> tuple[Path, Path]:
    """Create ``NAME.key`` and ``NAME.key_secret`` in ``directory``; the secret is 0600."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (folder / f"{name}{suffix}").exists():
            raise CurveError(f"{folder / (name + suffix)} exists; not overwriting a key")
    previous = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(previous)
    Path(secret).chmod(0o600)
    Path(public).chmod(0o644)
    return Path(public), Path(secret)


def secure_server(socket: zmq.Socket[Any], certificate: Certificate) -> None:
    """Make ``socket`` a CURVE server (before it binds)."""
    socket.curve_secretkey = certificate.secret_key()
    socket.curve_publickey = certificate.public
    socket.curve_server = True
    socket.zap_domain = ZAP_DOMAIN.encode()


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs: the server's public key and its own key pair."""

    server_public: bytes
    client: Certificate

    @classmethod
    def load(cls, server_key: str | Path, client_key: str | Path) -> ClientKeys:
        """``server_key``: the server's certificate (public part used); ``client_key``:
        the client's own secret certificate."""
        return cls(
            load_certificate(server_key, secret=False).public,
            load_certificate(client_key, secret=True),
        )

    @classmethod
    def optional(
        cls, server_key: str | Path | None, client_key: str | Path | None
    ) -> ClientKeys | None:
        """Both keys loaded, or None when neither is given (one alone: ValueError)."""
        if (server_key is None) != (client_key is None):
            raise ValueError("CURVE needs both curve_server_key and curve_client_key")
        if server_key is None or client_key is None:
            return None
        return cls.load(server_key, client_key)

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` a CURVE client (before it connects)."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.client.public
        socket.curve_secretkey = self.client.secret_key()


class ClientGate:
    """Lets in only listed client keys; reports every refusal; reloads on demand.

    Runs ``zmq.auth``'s ZAP handler in its own thread with this object as the
    credentials provider, so refusals are seen with the peer's address.
    """

    def __init__(
        self, context: zmq.Context[Any], clients: str | Path, on_refused: RefusalHandler
    ) -> None:
        self.clients = Path(clients)
        self._allowed = load_allowed_clients(self.clients)
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._authenticator = _AddressAwareAuthenticator(context, self)

    @property
    def allowed(self) -> frozenset[bytes]:
        with self._lock:
            return self._allowed

    def start(self) -> None:
        self._authenticator.start()
        self._authenticator.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    def stop(self) -> None:
        self._authenticator.stop()

    def reload(self) -> int:
        """Read the clients directory again; on a problem keep the old keys and raise."""
        allowed = load_allowed_clients(self.clients)
        with self._lock:
            self._allowed = allowed
        return len(allowed)

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth's credentials provider: is this z85 public key allowed?"""
        if key in self.allowed:
            return True
        address = self._authenticator.current_address
        self._on_refused(address, f"unknown client key {key.decode(errors='replace')}")
        return False


class _AddressAwareAuthenticator(ThreadAuthenticator):
    """Remembers the address of the request being judged, for the refusal report."""

    def __init__(self, context: zmq.Context[Any], gate: ClientGate) -> None:
        super().__init__(context, log=logging.getLogger(f"{__name__}.zap"))
        self.current_address = "?"
        self._gate = gate

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.current_address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)


HANDSHAKE_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
"""Monitor events of peers that never reached the key check (a plain socket, a wrong
server key); refused keys are reported by the gate itself."""
