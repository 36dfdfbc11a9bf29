"""The front end: the `framesink` command, logging setup, the status table, the demo
and the synthetic camera. Only this layer configures logging.
"""

from ._camera import SyntheticCamera, publish_synthetic
from ._main import main
from ._progress import ProgressBar
from ._statusview import render_status

__all__ = ["ProgressBar", "SyntheticCamera", "main", "publish_synthetic", "render_status"]
