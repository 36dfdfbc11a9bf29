"""FramesinkHandler: a pymmcore-plus MDA output handler that streams into framesink."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import useq

from ..core import AcquisitionEntry, FramesinkError
from ..transport import (
    ClientKeys,
    ControlClient,
    ControlError,
    PublishedAcquisition,
    Publisher,
    PublishError,
)
from ._plan import (
    PositionKey,
    SequencePlan,
    UnsupportedSequenceError,
    acquisition_metadata,
    plan_sequence,
    plane_metadata,
)

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

log = logging.getLogger(__name__)

START_CONFIRM_S = 10.0


class FramesinkHandlerError(FramesinkError, RuntimeError):
    """The daemon is down, refused an acquisition, or did not finish its files."""


class FramesinkHandler:
    """Streams an MDA into framesink: one OME-TIFF (and metadata.json) per stage position.

    Pass it to ``core.mda.run(sequence, output=handler)``, alone or beside other
    handlers. With ``control`` (the daemon's control endpoint) the files are final when
    ``run`` returns, and a daemon that is down raises here, before the run. With
    ``core`` as well, a start the daemon refuses raises from ``run`` before the first
    frame (the handler then checks the starts in the runner's own thread), and a
    failure during the run (the daemon gone, the camera's frames changing shape) ends
    it, raised from ``run`` at the next event. Every failure is also kept in
    ``errors``; ``check()`` raises FramesinkHandlerError naming them (call it after
    ``run``: a failure at the very end has no next event to raise from).
    ``image_format`` (``"ome-tiff"``, ``"ome-zarr"``), ``compression`` and
    ``compression_level`` (``"zstd"``, ``"deflate"``, for OME-Zarr also ``"blosc-lz4"``;
    the daemon's defaults when None) choose how each position is stored.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        control: str | None = None,
        kind: Literal["push", "pub"] = "push",
        output_path: str,
        output_name: str,
        shared_memory: int | None = None,
        core: CMMCorePlus | None = None,
        finish_timeout: float = 600.0,
        curve_server_key: str | Path | None = None,
        curve_client_key: str | Path | None = None,
        compression: str | None = None,
        compression_level: int | None = None,
        image_format: str | None = None,
    ) -> None:
        self.output_path = output_path
        self.image_format = image_format
        self.compression = compression
        self.compression_level = compression_level
        self.output_name = output_name
        self.finish_timeout = finish_timeout
        self.entries: dict[str, AcquisitionEntry] = {}
        """The daemon's final entry of each acquisition, once the run has finished."""
        self._connect = partial(
            Publisher,
            endpoint,
            kind=kind,
            control=control,
            curve_server_key=curve_server_key,
            curve_client_key=curve_client_key,
            shared_memory=shared_memory,
        )
        self._publisher: Publisher | None = None
        self._check_daemon(control, ClientKeys.optional(curve_server_key, curve_client_key))
        self._core = core
        self._lock = threading.Lock()
        self._plan: SequencePlan | None = None
        self._open: dict[PositionKey, PublishedAcquisition] = {}
        self._canceled = False
        self._frame_shape: tuple[int, ...] | None = None
        self.errors: list[str] = []
        """What went wrong during the last run (empty when it went well)."""
        if core is not None:
            core.mda.events.sequenceStarted.connect(self._prepare_in_runner)
            core.mda.events.eventStarted.connect(self._raise_in_runner)

    def check(self) -> None:
        """Raise FramesinkHandlerError if anything went wrong in the last run."""
        if self.errors:
            raise FramesinkHandlerError("; ".join(self.errors))

    # -- pymmcore-plus handler protocol -------------------------------------------------
    def sequenceStarted(self, sequence: useq.MDASequence, meta: Mapping[str, Any]) -> None:
        self._prepare(sequence, meta)

    def frameReady(
        self, img: np.ndarray[Any, Any], event: useq.MDAEvent, meta: Mapping[str, Any]
    ) -> None:
        plan = self._plan
        if plan is None:
            if not self.errors:
                self._fail("a frame came before the run was prepared; it is not written")
            return
        if self.errors:
            return  # the run failed: its acquisitions are aborted, their files say why
        key = (int(event.index.get("p", 0)), int(event.index.get("g", 0)))
        acquisition = self._open.get(key)
        if acquisition is None:
            self._fail(f"a frame for position {key}, which has no acquisition, is not written")
            return
        if img.shape != self._frame_shape:
            self._fail(
                f"the camera's frames changed shape from {self._frame_shape} to {img.shape} "
                "during the run; one file holds one frame shape"
            )
            return
        try:
            acquisition.send(
                img, [plane_metadata(event, meta)], index=plan.frame_index(event.index)
            )
        except (PublishError, ValueError, TypeError) as exc:
            self._fail(f"frame {dict(event.index)} could not be sent: {exc}")

    def sequenceCanceled(self, sequence: useq.MDASequence) -> None:
        self._canceled = True

    def sequenceFinished(self, sequence: useq.MDASequence) -> None:
        try:
            self._finish_all()
        finally:
            if self._core is not None:
                self._core.mda.events.sequenceStarted.disconnect(self._prepare_in_runner)
                self._core.mda.events.eventStarted.disconnect(self._raise_in_runner)
            self._plan = None
            self._close_publisher()
        if self.errors:
            log.error("framesink: the run did not go well: %s", "; ".join(self.errors))

    def _fail(self, error: str) -> None:
        """Record a failure and end every acquisition with it; with core, the runner's
        next event raises it (the run ends as errored)."""
        log.error("framesink: %s", error)
        with self._lock:
            self.errors.append(error)
            self._abort_all(error)

    def _raise_in_runner(self, event: useq.MDAEvent) -> None:
        """Connected directly to the runner: a failure so far makes ``run`` raise it."""
        if self.errors:
            raise FramesinkHandlerError("; ".join(self.errors))

    def _close_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    # -- internals ----------------------------------------------------------------------
    def _check_daemon(self, control: str | None, keys: ClientKeys | None) -> None:
        if control is None:
            return
        try:
            ControlClient(control, keys=keys).ping()
        except ControlError as exc:
            raise FramesinkHandlerError(f"framesink daemon not reachable: {exc}") from None

    def _prepare_in_runner(self, sequence: useq.MDASequence, meta: Mapping[str, Any]) -> None:
        """Connected directly to the runner: an exception here makes ``run`` raise it
        before the first frame."""
        try:
            self._prepare(sequence, meta)
        except Exception:
            if self._core is not None:
                self._core.mda.events.sequenceStarted.disconnect(self._prepare_in_runner)
            raise

    def _prepare(self, sequence: useq.MDASequence, meta: Mapping[str, Any]) -> None:
        """Start one acquisition per position (once per run, whichever thread comes first)."""
        with self._lock:
            if self._plan is not None:
                return
            self.errors = []
            try:
                plan = plan_sequence(sequence, self.output_path, self.output_name)
            except UnsupportedSequenceError as exc:
                self.errors.append(str(exc))
                raise FramesinkHandlerError(str(exc)) from None
            self._canceled = False
            image = _image_info(meta)
            self._frame_shape = tuple(image["plane_shape"])
            state = self._core_state(image)
            run = uuid.uuid4().hex[:8]
            publisher = self._publisher = self._connect()
            try:
                for position in plan.positions:
                    p, g = position.key
                    self._open[position.key] = publisher.start(
                        f"mmcore-{run}-p{p}g{g}",
                        acquisition_metadata(sequence, plan, position, meta, state),
                        output_path=position.output_path,
                        output_name=position.stem,
                        dtype=str(image["dtype"]),
                        frame_shape=tuple(image["plane_shape"]),
                        shape=list(plan.shape),
                        confirm=publisher.control_client is not None,
                        confirm_timeout=START_CONFIRM_S,
                        compression=self.compression,
                        compression_level=self.compression_level,
                        format=self.image_format,
                    )
            except PublishError as exc:
                self._abort_all(f"the run could not start: {exc}")
                self._close_publisher()
                raise FramesinkHandlerError(str(exc)) from None
            self._plan = plan

    def _core_state(self, image: Mapping[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {
            "camera": image.get("camera_label"),
            "pixel_size_um": image.get("pixel_size_um"),
            "image": dict(image),
        }
        core = self._core
        if core is None:
            return state
        camera = core.getCameraDevice()
        state["camera"] = camera
        state["pixel_size_um"] = core.getPixelSizeUm()
        if camera and core.hasProperty(camera, "Binning"):
            state["binning"] = core.getProperty(camera, "Binning")
        objectives = [d for d in core.getLoadedDevices() if "objective" in d.lower()]
        if objectives and core.hasProperty(objectives[0], "Label"):
            state["objective"] = core.getProperty(objectives[0], "Label")
        return state

    def _finish_all(self) -> None:
        """Stop (or abort, after a cancel or an error) every acquisition; wait for the files."""
        errored = self._core is not None and str(self._core.mda.status.finish_reason) == "errored"
        failures = []
        confirm = self._publisher is not None and self._publisher.control_client is not None
        wait = self.finish_timeout if confirm else None
        for key, acquisition in list(self._open.items()):
            try:
                if self._canceled or errored:
                    reason = "MDA canceled" if self._canceled else "MDA ended with an error"
                    entry = acquisition.abort(reason, wait=wait)
                else:
                    entry = acquisition.stop(wait=wait)
            except PublishError as exc:
                failures.append(f"acquisition {acquisition.acquisition} did not finish: {exc}")
                continue
            finally:
                del self._open[key]
            if entry is not None:
                self.entries[acquisition.acquisition] = entry
        self.errors.extend(failures)

    def _abort_all(self, reason: str) -> None:
        for acquisition in self._open.values():
            try:
                acquisition.abort(reason)
            except PublishError as exc:
                log.error("could not abort %s: %s", acquisition.acquisition, exc)
        self._open.clear()


def _image_info(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    infos = meta.get("image_infos") or ()
    if not infos:
        raise FramesinkHandlerError("the MDA summary has no image_infos (camera shape, dtype)")
    info: Mapping[str, Any] = infos[0]
    if len(tuple(info["plane_shape"])) != 2:
        raise FramesinkHandlerError(
            f"framesink.mmcore writes monochrome cameras; got planes of {info['plane_shape']}"
        )
    return info
