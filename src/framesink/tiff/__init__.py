"""The TIFF sink: streaming OME-TIFF writer, journal, sidecar, recovery and the batch API.

An IO adapter over :mod:`framesink.core`; it knows nothing of sockets or the daemon.
"""

from ._batch import save_config_frames
from ._files import describe_os_error, read_record
from ._folder import Folder
from ._journal import JournalHeader, read_journal
from ._paths import PathError, open_output_folder
from ._recovery import RecoveryError, RecoveryOutcome, find_interrupted, recover, recover_each
from ._series import DATA_ALIGNMENT, ContiguousSeries
from ._sink import TiffSink
from ._writer import StreamWriter

__all__ = [
    "DATA_ALIGNMENT",
    "ContiguousSeries",
    "Folder",
    "JournalHeader",
    "PathError",
    "RecoveryError",
    "RecoveryOutcome",
    "StreamWriter",
    "TiffSink",
    "describe_os_error",
    "find_interrupted",
    "open_output_folder",
    "read_journal",
    "read_record",
    "recover",
    "recover_each",
    "save_config_frames",
]
