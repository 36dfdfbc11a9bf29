"""The storage formats framesink writes, by name, and everything chosen by a format name.

The one place that knows the format packages (:mod:`framesink.tiff`, ...): the daemon,
the public API and the CLI reach formats only through here. A new format is a package
that implements :class:`~framesink.store.ImageFormat` and one registry entry (an entry
point in the group ``framesink.formats``, or :meth:`FormatRegistry.register`).
"""

from ..tiff import save_config_frames  # the seed's batch API, always OME-TIFF
from ._api import StreamWriter, open_acquisition, open_sink, recover, recover_each
from ._registry import DEFAULT_FORMAT, ENTRY_POINT_GROUP, FORMATS, FormatRegistry

__all__ = [
    "DEFAULT_FORMAT",
    "ENTRY_POINT_GROUP",
    "FORMATS",
    "FormatRegistry",
    "StreamWriter",
    "open_acquisition",
    "open_sink",
    "recover",
    "recover_each",
    "save_config_frames",
]
