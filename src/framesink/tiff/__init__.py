"""OME-TIFF: one BigTIFF series of pages with OME-XML, as a storage format.

Only the encoding lives here (page series, page index, OME-XML); the folder, journal,
sidecar, writer and recovery are :mod:`framesink.store`'s. Also the batch API framesink
grew from, :func:`save_config_frames`, which always writes OME-TIFF.
"""

from ._batch import save_config_frames
from ._format import OmeTiffFormat
from ._image import PageSeries, TiffImage
from ._ome import build_ome_xml, dimension_order
from ._series import DATA_ALIGNMENT, ContiguousSeries

__all__ = [
    "DATA_ALIGNMENT",
    "ContiguousSeries",
    "OmeTiffFormat",
    "PageSeries",
    "TiffImage",
    "build_ome_xml",
    "dimension_order",
    "save_config_frames",
]
