"""framesink: a streaming acquisition writer daemon (ZeroMQ frames in, OME-TIFF out).

The public API: the batch function and its models, the streaming writer, recovery,
the publisher client, the control client and the typed status it returns.
"""

from .core import (
    AcquisitionEntry,
    AcquisitionRecord,
    AcquisitionState,
    Counter,
    CounterValues,
    DaemonStatus,
    FinishReason,
    FrameLayout,
    FramesinkError,
    LayoutError,
    MetaData,
    OutputParameters,
    WriteError,
    __version__,
)
from .formats import StreamWriter, open_acquisition, recover, save_config_frames
from .store import Acquisition, FrameArray, NotAnAcquisitionError, RecoveryError
from .transport import ControlClient, ControlError, PublishedAcquisition, Publisher, PublishError

__all__ = [
    "Acquisition",
    "AcquisitionEntry",
    "AcquisitionRecord",
    "AcquisitionState",
    "ControlClient",
    "ControlError",
    "Counter",
    "CounterValues",
    "DaemonStatus",
    "FinishReason",
    "FrameArray",
    "FrameLayout",
    "FramesinkError",
    "LayoutError",
    "MetaData",
    "NotAnAcquisitionError",
    "OutputParameters",
    "PublishError",
    "PublishedAcquisition",
    "Publisher",
    "RecoveryError",
    "StreamWriter",
    "WriteError",
    "__version__",
    "open_acquisition",
    "recover",
    "save_config_frames",
]
