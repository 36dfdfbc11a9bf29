"""The ZeroMQ transports: the daemon's ingest socket, its control endpoint and client,
the publisher client, and systemd notification. IO adapters over :mod:`framesink.core`.
"""

from ._control import (
    CommandHandler,
    ControlClient,
    ControlError,
    ControlServer,
    StatusProvider,
    parse_status,
)
from ._curve import (
    HANDSHAKE_REFUSED,
    Certificate,
    ClientGate,
    ClientKeys,
    CurveError,
    RefusalHandler,
    load_allowed_clients,
    load_certificate,
    write_certificates,
)
from ._ingest import IngestSource, PeerEvents, Received
from ._notify import sd_notify
from ._publisher import PublishedAcquisition, Publisher, PublishError
from ._ring import RingError, SharedRing
from ._rings import Ring, RingLease, RingLimits, RingServer

__all__ = [
    "HANDSHAKE_REFUSED",
    "Certificate",
    "ClientGate",
    "ClientKeys",
    "CommandHandler",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "CurveError",
    "IngestSource",
    "PeerEvents",
    "PublishError",
    "PublishedAcquisition",
    "Publisher",
    "Received",
    "RefusalHandler",
    "Ring",
    "RingError",
    "RingLease",
    "RingLimits",
    "RingServer",
    "SharedRing",
    "StatusProvider",
    "load_allowed_clients",
    "load_certificate",
    "parse_status",
    "sd_notify",
    "write_certificates",
]
