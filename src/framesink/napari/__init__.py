"""napari integration: open an acquisition, finished or running, and follow it as it is
written (``pip install 'framesink[napari]'``).

``napari out/run1`` (its folder, or its image) opens it through this plugin's reader:
lazy, one layer per channel, scaled by the metadata's pixel sizes. ``follow(viewer,
path)``, or the widget *Plugins > framesink > Follow a running acquisition*, keeps its
layers current while the daemon writes it; see docs/operations.md.
"""

try:
    import dask.array  # noqa: F401
    import napari  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("framesink.napari needs napari: pip install 'framesink[napari]'") from exc

from ._follow import AcquisitionFollower, follow
from ._layers import AcquisitionLayers, get_reader, read_layers
from ._widget import follow_widget

__all__ = [
    "AcquisitionFollower",
    "AcquisitionLayers",
    "follow",
    "follow_widget",
    "get_reader",
    "read_layers",
]
