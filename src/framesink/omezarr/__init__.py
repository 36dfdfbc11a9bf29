"""OME-Zarr (NGFF 0.5 on Zarr v3, sharded) as a storage format, written shard by shard.

:class:`OmeZarrFormat` is the :class:`~framesink.store.ImageFormat`: frames are cut into
chunks, compressed by the shared codec pool, and appended to shards whose index (at
their start) is rewritten as they fill, so every shard is readable at every moment.
"""

from ._format import InterruptedZarr, OmeZarrFormat
from ._grid import ShardGrid, check_ngff_axes
from ._image import ZarrImage

__all__ = ["InterruptedZarr", "OmeZarrFormat", "ShardGrid", "ZarrImage", "check_ngff_axes"]
