"""The pure core: models, frame layout, wire codec, routing state machine, OME-XML, status.

Nothing here touches a file or a socket; the IO adapters (:mod:`framesink.tiff`,
:mod:`framesink.transport`), the daemon and the front end build on it.
"""

from ._budget import ByteBudget
from ._layout import SUPPORTED_DTYPES, FrameLayout, LayoutError
from ._models import RESERVED_METADATA_KEY, MetaData, OutputParameters, check_axes, metadata_dict
from ._names import (
    JOURNAL_FILE,
    METADATA_FILE,
    METADATA_TEMP,
    RECOVERY_FAILED_FILE,
    RECOVERY_FOLDER,
    OutputFiles,
    check_output_name,
)
from ._ome import build_ome_xml, dimension_order
from ._record import (
    AcquisitionFiles,
    AcquisitionRecord,
    FinishReason,
    metadata_document,
    utc_now,
)
from ._routing import Action, Drop, Finish, Open, Router, SeqGap, Skip, Write
from ._sink import (
    FrameChunk,
    FrameMetadata,
    FrameSink,
    SinkFactory,
    SinkProgress,
    SinkSpec,
    WriteError,
)
from ._status import (
    AcquisitionEntry,
    AcquisitionState,
    Counter,
    CounterValues,
    DaemonStatus,
    RecoveryFailure,
    Rejection,
    RunState,
)
from ._version import __version__
from ._wire import (
    PROTOCOL_VERSION,
    AbortHeader,
    FramesHeader,
    Message,
    StartHeader,
    StopHeader,
    WireError,
    decode,
    end_header,
    frames_header,
    pack_header,
    start_header,
)

__all__ = [
    "JOURNAL_FILE",
    "METADATA_FILE",
    "METADATA_TEMP",
    "PROTOCOL_VERSION",
    "RECOVERY_FAILED_FILE",
    "RECOVERY_FOLDER",
    "RESERVED_METADATA_KEY",
    "SUPPORTED_DTYPES",
    "AbortHeader",
    "AcquisitionEntry",
    "AcquisitionFiles",
    "AcquisitionRecord",
    "AcquisitionState",
    "Action",
    "ByteBudget",
    "Counter",
    "CounterValues",
    "DaemonStatus",
    "Drop",
    "Finish",
    "FinishReason",
    "FrameChunk",
    "FrameLayout",
    "FrameMetadata",
    "FrameSink",
    "FramesHeader",
    "LayoutError",
    "Message",
    "MetaData",
    "Open",
    "OutputFiles",
    "OutputParameters",
    "RecoveryFailure",
    "Rejection",
    "Router",
    "RunState",
    "SeqGap",
    "SinkFactory",
    "SinkProgress",
    "SinkSpec",
    "Skip",
    "StartHeader",
    "StopHeader",
    "WireError",
    "Write",
    "WriteError",
    "__version__",
    "build_ome_xml",
    "check_axes",
    "check_output_name",
    "decode",
    "dimension_order",
    "end_header",
    "frames_header",
    "metadata_dict",
    "metadata_document",
    "pack_header",
    "start_header",
    "utc_now",
]
