"""Real pymmcore-plus MDAs (UniMMCore, pure-Python devices) into a real daemon process."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import useq

from framesink.mmcore import FramesinkHandler, FramesinkHandlerError

from ..helpers import DaemonProcess, read_metadata, read_ome_zarr, read_tiff, validate_ome
from ..mmcore_rig import CHANNELS, PIXEL_SIZE_UM, SENSOR, Recorder, make_core

StartDaemon = Callable[..., DaemonProcess]
DOCS = Path(__file__).parents[2] / "docs" / "pymmcore-plus.md"
POSITIONS = (useq.Position(x=0, y=0, z=0, name="well A1"), useq.Position(x=100, y=50, z=2))


def _sequence(**changes: object) -> useq.MDASequence:
    fields: dict[str, object] = {
        "time_plan": {"interval": 0, "loops": 3},
        "stage_positions": POSITIONS,
        "channels": list(CHANNELS),
        "z_plan": {"range": 3, "step": 1},
        "axis_order": "tpcz",
    }
    return useq.MDASequence(**(fields | changes))


def _handler(daemon: DaemonProcess, **options: object) -> FramesinkHandler:
    settings: dict[str, object] = {"output_path": "exp", "output_name": "cells"}
    return FramesinkHandler(
        daemon.ingest[0],
        control=daemon.control,
        **(settings | options),  # type: ignore[arg-type]
    )


def test_t_positions_channels_z_give_one_pixel_exact_tczyx_file_per_position(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder()
    handler = _handler(daemon, core=core)
    core.mda.run(_sequence(), output=[handler, recorder])

    assert len(handler.entries) == 2
    assert all(e.complete and e.frames_written == 24 for e in handler.entries.values())
    folders = {0: "cells_p000_well-A1", 1: "cells_p001"}
    for p, name in folders.items():
        tiff = daemon.data_root / "exp" / name / f"{name}.ome.tiff"
        _, pixels, xml = read_tiff(tiff)
        assert pixels.shape == (3, 2, 4, *SENSOR)
        for t in range(3):
            for c in range(2):
                for z in range(4):
                    expected = recorder.at(t=t, p=p, c=c, z=z)
                    assert expected is not None
                    np.testing.assert_array_equal(pixels[t, c, z], expected)
        image = validate_ome(xml).images[0]
        assert image.pixels.dimension_order.value == "XYZCT"
        assert [ch.name for ch in image.pixels.channels] == list(CHANNELS)
        assert image.pixels.physical_size_x == pytest.approx(PIXEL_SIZE_UM)
        assert image.pixels.physical_size_z == pytest.approx(1.0)
        planes = image.pixels.planes
        assert len(planes) == 24
        assert {round(plane.exposure_time or 0, 6) for plane in planes} == {0.01}
        assert {(plane.position_x, plane.position_y) for plane in planes} == {
            (POSITIONS[p].x, POSITIONS[p].y)
        }
        assert sorted({plane.position_z for plane in planes}) == pytest.approx(
            [(POSITIONS[p].z or 0.0) + dz for dz in (-1.5, -0.5, 0.5, 1.5)]
        )
        assert all(plane.delta_t is not None for plane in planes)
        metadata = read_metadata(tiff.parent)
        assert metadata["axes"] == "TCZYX"
        assert metadata["position"]["index"] == p
        assert metadata["useq_sequence"]["axis_order"] == ["t", "p", "c", "z"]
        assert metadata["mmcore"]["camera"] == "Camera"
        assert metadata["mmcore"]["pixel_size_um"] == pytest.approx(PIXEL_SIZE_UM)
        assert metadata["framesink"]["complete"] is True


def test_a_cancelled_run_keeps_every_delivered_frame_and_ends_aborted(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder(cancel_after=20, core=core)
    handler = _handler(daemon, core=core)
    core.mda.run(_sequence(), output=[handler, recorder])

    delivered = dict(recorder.frames)
    assert 20 <= len(delivered) < 48
    written = 0
    for p, name in {0: "cells_p000_well-A1", 1: "cells_p001"}.items():
        folder = daemon.data_root / "exp" / name
        record = read_metadata(folder)["framesink"]
        assert (record["reason"], record["complete"]) == ("abort", False)
        assert read_metadata(folder)["abort_reason"] == "MDA canceled"
        pixels = read_tiff(folder / f"{name}.ome.tiff")[1].reshape(record["shape"])
        for key, image in delivered.items():
            index = dict(key)
            if index["p"] == p:
                np.testing.assert_array_equal(pixels[index["t"], index["c"], index["z"]], image)
        written += record["frames_written"]
    assert written == len(delivered)


def test_skipped_events_become_recorded_gaps_never_shifted_frames(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder()
    channels = [useq.Channel(config="DAPI"), useq.Channel(config="FITC", do_stack=False)]
    sequence = _sequence(stage_positions=POSITIONS[:1], channels=channels, time_plan=None)
    handler = _handler(daemon, output_name="gaps", core=core)
    core.mda.run(sequence, output=[handler, recorder])

    (entry,) = handler.entries.values()
    assert entry.frames_written == 5
    assert entry.frames_missing == 3
    assert entry.complete is False
    _, pixels, _ = read_tiff(daemon.data_root / "exp" / "gaps.ome.tiff")
    assert pixels.shape == (2, 4, *SENSOR)
    for c in range(2):
        for z in range(4):
            expected = recorder.at(p=0, c=c, z=z)
            if expected is None:
                assert not pixels[c, z].any(), "a skipped event is a zero-filled gap"
            else:
                np.testing.assert_array_equal(pixels[c, z], expected)
    record = read_metadata(daemon.data_root / "exp")["framesink"]
    assert record["missing_ranges"] == [[4, 5], [7, 7]]


def test_a_daemon_that_is_down_or_refuses_raises_before_the_first_frame(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    with pytest.raises(FramesinkHandlerError, match="not reachable"):
        FramesinkHandler(
            f"ipc://{tmp_path}/nobody",
            control=f"ipc://{tmp_path}/nobody-control",
            output_path="x",
            output_name="x",
        )
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder()
    handler = _handler(daemon, output_name=".framesink-reserved", core=core)
    with pytest.raises(Exception, match=r"framesink refused acquisition .*: bad_output"):
        core.mda.run(_sequence(), output=[handler, recorder])
    assert recorder.frames == {}
    assert not (daemon.data_root / "exp").exists()


def test_the_handler_streams_through_shared_memory(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder()
    handler = _handler(daemon, output_name="shm", core=core, shared_memory=4 << 20)
    core.mda.run(_sequence(stage_positions=POSITIONS[:1]), output=[handler, recorder])
    (entry,) = handler.entries.values()
    assert (entry.frames_written, entry.complete) == (24, True)
    pixels = read_tiff(daemon.data_root / "exp" / "shm.ome.tiff")[1]
    for (t, c, z), _ in np.ndenumerate(np.empty((3, 2, 4))):
        np.testing.assert_array_equal(pixels[t, c, z], recorder.at(t=t, p=0, c=c, z=z))
    assert daemon.status().counters.frames_received == 24


def test_the_handler_asks_for_compressed_pages(start_daemon: StartDaemon) -> None:
    """``compression`` and its level reach every position's start: pixel-exact zstd pages."""
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder()
    handler = _handler(daemon, output_name="z", core=core, compression="zstd", compression_level=5)
    core.mda.run(_sequence(stage_positions=POSITIONS[:1]), output=[handler, recorder])
    (entry,) = handler.entries.values()
    assert (entry.frames_written, entry.complete, entry.compression) == (24, True, "zstd")
    record = read_metadata(daemon.data_root / "exp")["framesink"]
    assert (record["compression"], record["compression_level"]) == ("zstd", 5)
    pixels = read_tiff(daemon.data_root / "exp" / "z.ome.tiff")[1]
    for (t, c, z), _ in np.ndenumerate(np.empty((3, 2, 4))):
        np.testing.assert_array_equal(pixels[t, c, z], recorder.at(t=t, p=0, c=c, z=z))


def test_an_mda_to_ome_zarr_has_channel_names_and_pixel_sizes(
    start_daemon: StartDaemon,
) -> None:
    """``image_format="ome-zarr"``: one OME-Zarr per position, pixel-exact, its NGFF
    attributes naming the channels and the pixel and z-step sizes."""
    daemon = start_daemon(socket="pull")
    core = make_core()
    recorder = Recorder()
    handler = _handler(
        daemon, output_name="z", core=core, image_format="ome-zarr", compression="blosc-lz4"
    )
    core.mda.run(_sequence(stage_positions=POSITIONS[:2]), output=[handler, recorder])
    assert len(handler.entries) == 2
    for p, entry in enumerate(sorted(handler.entries.values(), key=lambda e: e.path)):
        assert (entry.frames_written, entry.complete, entry.compression) == (24, True, "blosc-lz4")
        image = Path(entry.path)
        assert image.name.endswith(".ome.zarr")
        pixels, attributes = read_ome_zarr(image)
        assert pixels.shape == (3, 2, 4, *SENSOR)
        for (t, c, z), _ in np.ndenumerate(np.empty((3, 2, 4))):
            np.testing.assert_array_equal(pixels[t, c, z], recorder.at(t=t, p=p, c=c, z=z))
        ome = attributes["ome"]
        labels = [channel["label"] for channel in ome["omero"]["channels"]]
        assert labels == list(CHANNELS)
        (transform,) = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        assert transform["scale"][-2:] == [PIXEL_SIZE_UM, PIXEL_SIZE_UM]
        assert transform["scale"][2] > 0
        assert read_metadata(image.parent)["framesink"]["format"] == "ome-zarr"


def test_the_documented_example_runs_as_is(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """The docs' example, with only the daemon's two endpoints pointed at the test's."""
    daemon = start_daemon(socket="pull")
    (example,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    script = example.replace("tcp://127.0.0.1:5555", daemon.ingest[0]).replace(
        "tcp://127.0.0.1:5556", daemon.control
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tiffs = sorted(daemon.data_root.rglob("*.ome.tiff"))
    assert len(tiffs) == 2
    for tiff in tiffs:
        assert read_tiff(tiff)[1].shape[:3] == (3, 2, 5)
        assert read_metadata(tiff.parent)["framesink"]["complete"] is True


def test_frames_changing_shape_mid_run_end_the_run_with_the_reason(
    start_daemon: StartDaemon,
) -> None:
    """Review 2, item 7: the run returned normally with 2 of 5 frames and nothing missing."""
    daemon = start_daemon(socket="pull")
    core = make_core()
    seen: list[int] = []

    def change_binning(img: np.ndarray, *_args: object) -> None:
        """As a camera whose binning or ROI changes mid-run: from the fourth frame on,
        the frames (the same arrays every handler gets) have another shape."""
        seen.append(1)
        if len(seen) > 3:
            img.shape = (SENSOR[1], SENSOR[0])

    core.mda.events.frameReady.connect(change_binning)
    handler = _handler(daemon, core=core)
    sequence = useq.MDASequence(time_plan={"interval": 0.05, "loops": 12})
    with pytest.raises(Exception, match="changed shape"):
        core.mda.run(sequence, output=handler)
    with pytest.raises(FramesinkHandlerError, match="changed shape"):
        handler.check()
    document = read_metadata(daemon.data_root / "exp")
    assert document["framesink"]["reason"] == "abort"
    assert "changed shape" in document["abort_reason"]
    assert document["framesink"]["frames_written"] == 3


def test_a_list_of_events_is_refused_before_the_first_frame(start_daemon: StartDaemon) -> None:
    """Review 2, item 8: a list of events was written as one frame, the rest dropped."""
    daemon = start_daemon(socket="pull")
    core = make_core()
    handler = _handler(daemon, core=core)
    with pytest.raises(Exception, match=r"needs a useq\.MDASequence"):
        core.mda.run(list(_sequence(stage_positions=[])), output=handler)
    with pytest.raises(FramesinkHandlerError, match=r"needs a useq\.MDASequence"):
        handler.check()
    assert not (daemon.data_root / "exp").exists()


def test_a_daemon_that_dies_mid_run_is_reported(start_daemon: StartDaemon) -> None:
    """Review 2, item 9: run() returned normally, entries empty, no error raised."""
    import signal

    daemon = start_daemon(socket="pull")
    core = make_core()
    handler = FramesinkHandler(
        daemon.ingest[0],
        control=daemon.control,
        output_path="exp",
        output_name="cells",
        core=core,
        finish_timeout=5.0,
    )
    killed: list[bool] = []

    def kill_daemon(*_args: object) -> None:
        if not killed:
            killed.append(True)
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait(10)

    core.mda.events.frameReady.connect(kill_daemon)
    try:
        core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 6}), output=handler)
    except Exception as exc:  # noqa: BLE001 - either way it must say what happened
        assert "did not finish" in str(exc) or "framesink" in str(exc)
    with pytest.raises(FramesinkHandlerError, match="did not finish"):
        handler.check()
    assert handler.entries == {}
