"""framesink: a streaming acquisition writer daemon (ZeroMQ frames in, OME-TIFF out)."""

from ._version import __version__
from .batch import save_config_frames
from .layout import FrameLayout, LayoutError
from .models import MetaData, OutputParameters
from .publisher import PublishedAcquisition, Publisher, PublishError
from .record import AcquisitionRecord, FinishReason
from .recovery import RecoveryError, recover
from .writer import StreamWriter, WriteError

__all__ = [
    "AcquisitionRecord",
    "FinishReason",
    "FrameLayout",
    "LayoutError",
    "MetaData",
    "OutputParameters",
    "PublishError",
    "PublishedAcquisition",
    "Publisher",
    "RecoveryError",
    "StreamWriter",
    "WriteError",
    "__version__",
    "recover",
    "save_config_frames",
]
