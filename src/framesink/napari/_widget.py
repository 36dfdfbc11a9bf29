"""The napari widget *Follow a running acquisition*.

Without ``from __future__ import annotations``: magicgui reads the annotations to build
the widget and to let napari hand it the viewer.
"""

from pathlib import Path

import napari.viewer
from magicgui import magic_factory

from ._follow import follow


@magic_factory(
    call_button="Follow",
    path={"mode": "d", "label": "acquisition"},
    interval={"min": 0.2, "max": 60.0, "step": 0.2, "label": "refresh (s)"},
    newest={"label": "show the newest frame"},
)
def follow_widget(
    viewer: napari.viewer.Viewer, path: Path, interval: float = 1.0, newest: bool = True
) -> None:
    """Open an acquisition (its folder) and follow it while it is written."""
    follow(viewer, path, interval=interval, newest=newest)
