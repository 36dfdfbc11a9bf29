"""The ZeroMQ transports: the daemon's ingest socket, its control endpoint and client,
the publisher client, and systemd notification. IO adapters over :mod:`framesink.core`.
"""

from ._control import ControlClient, ControlError, ControlServer, parse_status
from ._ingest import IngestSource
from ._notify import sd_notify
from ._publisher import PublishedAcquisition, Publisher, PublishError

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlServer",
    "IngestSource",
    "PublishError",
    "PublishedAcquisition",
    "Publisher",
    "parse_status",
    "sd_notify",
]
