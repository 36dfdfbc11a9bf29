"""The format registry: from a format's name (as a start names it) to its ImageFormat.

framesink's own formats are listed here; others come from installed packages that
declare an entry point in the group ``framesink.formats`` (the object it names is an
:class:`~framesink.store.ImageFormat`). Everything that picks a format (the daemon's
sinks, the streaming writer, recovery) asks this registry, and only this registry.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points

from ..core import FrameLayout, RefusalError, StorageOptions, check_held
from ..omezarr import OmeZarrFormat
from ..store import ImageFormat
from ..tiff import OmeTiffFormat

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "framesink.formats"
DEFAULT_FORMAT = "ome-tiff"


class FormatRegistry:
    """Formats by name; entry points are read once, when a name is first looked up."""

    def __init__(self, builtin: tuple[ImageFormat, ...]) -> None:
        self._formats = {image_format.name: image_format for image_format in builtin}
        self._lock = threading.Lock()
        self._plugins_loaded = False

    def register(self, image_format: ImageFormat) -> None:
        """Add a format (a name registered before is replaced)."""
        with self._lock:
            self._formats[image_format.name] = image_format

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._formats)

    def __getitem__(self, name: str) -> ImageFormat:
        """The format ``name``; KeyError if no installed package provides it."""
        self._load_plugins()
        return self._formats[name]

    def get(
        self,
        name: str,
        acquisition: str | None = None,
        options: StorageOptions | None = None,
        layout: FrameLayout | None = None,
    ) -> ImageFormat:
        """The format ``name``, able to hold ``options``' compression and ``layout``.

        A :class:`RefusalError` ``bad_format`` names the known formats (or says why the
        layout does not fit this one); ``bad_compression`` the codecs this one holds.
        """
        try:
            image_format = self[name]
        except KeyError:
            raise RefusalError(
                "bad_format",
                f"unknown format {name!r}; this daemon writes {', '.join(self.names())}",
                acquisition,
            ) from None
        if options is not None:
            check_held(options.compression, image_format.compressions, name, acquisition)
        if layout is not None:
            image_format.check_layout(layout, acquisition)
        return image_format

    def _load_plugins(self) -> None:
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            for entry in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    image_format = entry.load()
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop framesink
                    log.error(
                        "format plugin %s (%s) failed to load: %s", entry.name, entry.value, exc
                    )
                    continue
                self._formats.setdefault(image_format.name, image_format)


FORMATS = FormatRegistry((OmeTiffFormat(), OmeZarrFormat()))
"""The formats this framesink writes and recovers."""
