"""framesink's version, read from the installed distribution."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("framesink")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
