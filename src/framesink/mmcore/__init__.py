"""pymmcore-plus integration: stream an MDA into framesink (``pip install 'framesink[mmcore]'``).

``core.mda.run(sequence, output=FramesinkHandler(endpoint, control=..., output_path=...,
output_name=..., core=core))`` writes one OME-TIFF per stage position; see
docs/pymmcore-plus.md.
"""

try:
    import pymmcore_plus  # noqa: F401
    import useq  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "framesink.mmcore needs pymmcore-plus: pip install 'framesink[mmcore]'"
    ) from exc

from ._handler import FramesinkHandler, FramesinkHandlerError
from ._plan import UnsupportedSequenceError

__all__ = ["FramesinkHandler", "FramesinkHandlerError", "UnsupportedSequenceError"]
