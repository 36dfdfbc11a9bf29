"""The store: everything about an acquisition on disk that no format owns.

The folder below the data root (opened by descriptor, never overwritten), the journal
that makes an interrupted acquisition recoverable, the per-frame sidecar,
metadata.json, the streaming :class:`AcquisitionWriter` and the daemon's
:class:`StoreSink`, and recovery. A format (:mod:`framesink.tiff`, ...) plugs in only
the encoding of its pixels through :class:`ImageFormat`.
"""

from ._codecs import codec_pool, codec_workers, encoder, settle
from ._files import describe_os_error, read_record, write_json_atomically
from ._folder import Folder
from ._format import Image, ImageFormat, InterruptedImage
from ._journal import Journal, JournalHeader, JournalInUseError, JournalState, read_journal
from ._paths import PathError, folder_is_taken, open_output_folder
from ._pixels import (
    DIRECT_ALIGNMENT,
    MEMORY_ALIGNMENT,
    PartialWriteError,
    PixelFile,
    write_fully,
)
from ._reader import (
    Acquisition,
    FrameArray,
    NotAnAcquisitionError,
    acquisition_folder,
    open_acquisition,
)
from ._recovery import (
    FormatLookup,
    RecoveryError,
    RecoveryOutcome,
    find_interrupted,
    read_exactly,
    recover,
    recover_each,
)
from ._sidecar import Sidecar, read_sidecar
from ._sink import StoreSink
from ._writer import AcquisitionWriter

__all__ = [
    "DIRECT_ALIGNMENT",
    "MEMORY_ALIGNMENT",
    "Acquisition",
    "AcquisitionWriter",
    "Folder",
    "FormatLookup",
    "FrameArray",
    "Image",
    "ImageFormat",
    "InterruptedImage",
    "Journal",
    "JournalHeader",
    "JournalInUseError",
    "JournalState",
    "NotAnAcquisitionError",
    "PartialWriteError",
    "PathError",
    "PixelFile",
    "RecoveryError",
    "RecoveryOutcome",
    "Sidecar",
    "StoreSink",
    "acquisition_folder",
    "codec_pool",
    "codec_workers",
    "describe_os_error",
    "encoder",
    "find_interrupted",
    "folder_is_taken",
    "open_acquisition",
    "open_output_folder",
    "read_exactly",
    "read_journal",
    "read_record",
    "read_sidecar",
    "recover",
    "recover_each",
    "settle",
    "write_fully",
    "write_json_atomically",
]
