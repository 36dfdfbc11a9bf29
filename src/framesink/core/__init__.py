"""The pure core: models, frame layout, ledger, wire codec, routing state machine, status.

Nothing here touches a file or a socket; the IO adapters (:mod:`framesink.store`,
:mod:`framesink.transport`), the daemon and the front end build on it. The names
exported here are exactly those the layers above use (an architecture test keeps it
so); the rest stays in the private modules.
"""

from ._budget import ByteBudget
from ._calibration import axis_scales, channel_labels
from ._compression import Compression, check_held, compression_of
from ._errors import FramesinkError, RefusalError
from ._layout import SUPPORTED_DTYPES, FrameLayout, LayoutError
from ._ledger import Ledger
from ._models import RESERVED_METADATA_KEY, MetaData, OutputParameters, metadata_dict
from ._names import (
    JOURNAL_FILE,
    METADATA_FILE,
    METADATA_TEMP,
    NAME_MAX_BYTES,
    PARTIAL_SUFFIX,
    RECOVERY_FAILED_FILE,
    RECOVERY_FOLDER,
    ExistsPolicy,
    OutputFiles,
    check_characters,
    check_output_name,
    is_reserved,
    printable,
)
from ._record import (
    AcquisitionFiles,
    AcquisitionRecord,
    FinishReason,
    metadata_document,
    utc_now,
)
from ._ring import RELEASE_RECORD_BYTES, SLOT_ALIGNMENT, LentSlots, RingAllocator
from ._routing import Action, Drop, Finish, Open, OpenAcquisition, Router, SeqGap, Skip, Write
from ._sink import (
    FrameChunk,
    FrameMetadata,
    FrameSink,
    SinkFactory,
    SinkProgress,
    SinkSpec,
    StorageOptions,
    WriteError,
)
from ._status import (
    REJECTION_REASONS,
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
    FramesHeader,
    Message,
    StartHeader,
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
    "NAME_MAX_BYTES",
    "PARTIAL_SUFFIX",
    "RECOVERY_FAILED_FILE",
    "RECOVERY_FOLDER",
    "REJECTION_REASONS",
    "RELEASE_RECORD_BYTES",
    "RESERVED_METADATA_KEY",
    "SLOT_ALIGNMENT",
    "SUPPORTED_DTYPES",
    "AcquisitionEntry",
    "AcquisitionFiles",
    "AcquisitionRecord",
    "AcquisitionState",
    "Action",
    "ByteBudget",
    "Compression",
    "Counter",
    "CounterValues",
    "DaemonStatus",
    "Drop",
    "ExistsPolicy",
    "Finish",
    "FinishReason",
    "FrameChunk",
    "FrameLayout",
    "FrameMetadata",
    "FrameSink",
    "FramesHeader",
    "FramesinkError",
    "LayoutError",
    "Ledger",
    "LentSlots",
    "Message",
    "MetaData",
    "Open",
    "OpenAcquisition",
    "OutputFiles",
    "OutputParameters",
    "RecoveryFailure",
    "RefusalError",
    "Rejection",
    "RingAllocator",
    "Router",
    "RunState",
    "SeqGap",
    "SinkFactory",
    "SinkProgress",
    "SinkSpec",
    "Skip",
    "StartHeader",
    "StorageOptions",
    "Write",
    "WriteError",
    "__version__",
    "axis_scales",
    "channel_labels",
    "check_characters",
    "check_held",
    "check_output_name",
    "compression_of",
    "decode",
    "end_header",
    "frames_header",
    "is_reserved",
    "metadata_dict",
    "metadata_document",
    "pack_header",
    "printable",
    "start_header",
    "utc_now",
]
