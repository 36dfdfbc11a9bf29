"""The napari plugin: its reader (found through napari's plugin manager) and following a
running acquisition, against real files and a real daemon. napari's viewer model and a
Qt event loop run offscreen; no window or OpenGL is needed."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic.warnings import PydanticDeprecatedSince20

from framesink import MetaData, OutputParameters, Publisher, StreamWriter, save_config_frames

from ..helpers import DaemonProcess
from .test_compression import noisy

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PydanticDeprecatedSince20)  # napari's models, not ours
    import npe2
    from napari.components import ViewerModel

    from framesink.napari import AcquisitionFollower, follow, follow_widget, get_reader
    from framesink.napari._follow import FAILURES_BEFORE_STOP

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


@pytest.fixture
def viewer() -> ViewerModel:
    npe2.PluginManager.instance().discover()
    return ViewerModel()


@pytest.mark.parametrize("image_format", ["ome-tiff", "ome-zarr"])
def test_napari_opens_a_finished_acquisition_through_the_plugin(
    tmp_path: Path, viewer: ViewerModel, image_format: str
) -> None:
    """One lazy layer per channel, named and scaled from the metadata, pixel-exact."""
    frames = noisy(2 * 3 * 4, (24, 20), "uint16").reshape(2, 3, 4, 24, 20)
    metadata = {
        "axes": "TCZYX", "shape": [2, 3, 4], "channel_names": ["DAPI", "GFP", "RFP"],
        "physical_size_x": 0.25, "physical_size_y": 0.25, "physical_size_z": 1.5,
    }  # fmt: skip
    if image_format == "ome-tiff":
        save_config_frames(MetaData(**metadata), frames, OutputParameters(
            output_path=str(tmp_path / "run1"), output_name="cam"))  # fmt: skip
    else:
        with StreamWriter(
            tmp_path / "run1", "cam", metadata, dtype="uint16", frame_shape=(24, 20),
            shape=[2, 3, 4], format="ome-zarr", fsync_interval=None,
        ) as writer:  # fmt: skip
            writer.write(frames.reshape(-1, 24, 20))
    viewer.open(str(tmp_path / "run1"), plugin="framesink")
    assert [layer.name for layer in viewer.layers] == ["run1 DAPI", "run1 GFP", "run1 RFP"]
    for channel, layer in enumerate(viewer.layers):
        assert layer.data.shape == (2, 4, 24, 20)
        assert list(layer.axis_labels) == ["T", "Z", "Y", "X"]
        np.testing.assert_allclose(layer.scale, [1.0, 1.5, 0.25, 0.25])
        np.testing.assert_array_equal(np.asarray(layer.data[1, 2]), frames[1, channel, 2])
    assert get_reader(str(tmp_path)) is None, "a folder that is not an acquisition"
    assert get_reader(str(tmp_path / "missing")) is None


def test_a_follower_shows_the_frames_written_since_and_the_newest(
    tmp_path: Path, viewer: ViewerModel
) -> None:
    frames = noisy(10, (24, 20), "uint16")
    writer = StreamWriter(
        tmp_path, "cam", {"axes": "TYX"}, dtype="uint16", frame_shape=(24, 20),
        format="ome-zarr", fsync_interval=None,
    )  # fmt: skip
    writer.write(frames[:3])
    follower = AcquisitionFollower(viewer, tmp_path)
    (layer,) = follower.layers
    assert layer.data.shape == (3, 24, 20)
    assert viewer.dims.current_step[0] == 2, "the newest frame is shown"
    assert follower.refresh(), "nothing new: still running"
    assert layer.data.shape == (3, 24, 20)
    writer.write(frames[3:7])
    assert follower.refresh()
    assert layer.data.shape == (7, 24, 20)
    assert viewer.dims.current_step[0] == 6
    np.testing.assert_array_equal(np.asarray(layer.data), frames[:7])
    writer.write(frames[7:])
    writer.finalize()
    assert not follower.refresh(), "final: nothing more to follow"
    np.testing.assert_array_equal(np.asarray(layer.data), frames)
    viewer.layers.remove(layer)
    assert not follower.refresh(), "its layer left the viewer"


@pytest.mark.parametrize("image_format", ["ome-tiff", "ome-zarr"])
def test_following_an_acquisition_a_daemon_writes_on_the_qt_event_loop(
    start_daemon: Any, viewer: ViewerModel, qtbot: Any, image_format: str
) -> None:
    """The layer grows on its own while frames arrive; the follower stops at the end."""
    daemon: DaemonProcess = start_daemon("--fsync-interval", "0.1", socket="pull")
    frames = noisy(30, (64, 48), "uint16")
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        run = publisher.start(
            "live", {"axes": "TYX"}, output_path="live", output_name="cam", dtype="uint16",
            frame_shape=(64, 48), format=image_format,
        )  # fmt: skip
        run.send(frames[:5])
        daemon.wait_for(lambda s: (e := s.entry("live")) is not None and e.frames_written == 5)
        follower = follow(viewer, daemon.data_root / "live", interval=0.1)
        (layer,) = follower.layers
        assert follower.following
        run.send(frames[5:20], index=5)
        qtbot.waitUntil(lambda: layer.data.shape[0] == 20, timeout=15_000)
        np.testing.assert_array_equal(np.asarray(layer.data[5:20]), frames[5:20])
        run.send(frames[20:], index=20)
        run.stop(wait=20)
    qtbot.waitUntil(lambda: not follower.following, timeout=15_000)
    np.testing.assert_array_equal(np.asarray(layer.data), frames)
    assert follower.acquisition.record is not None


def test_the_follow_widget_follows_the_folder_it_is_given(
    tmp_path: Path, viewer: ViewerModel, qtbot: Any
) -> None:
    writer = StreamWriter(
        tmp_path, "cam", {"axes": "TYX"}, dtype="uint8", frame_shape=(8, 8), fsync_interval=None,
    )  # fmt: skip
    writer.write(np.full((2, 8, 8), 7, np.uint8))
    widget = follow_widget()
    widget(viewer=viewer, path=tmp_path, interval=0.2, newest=True)
    (layer,) = viewer.layers
    writer.write(np.full((1, 8, 8), 9, np.uint8))
    qtbot.waitUntil(lambda: layer.data.shape[0] == 3, timeout=10_000)
    assert np.asarray(layer.data[2]).max() == 9
    writer.finalize()


def test_following_a_multichannel_acquisition_updates_every_channel_layer(
    tmp_path: Path, viewer: ViewerModel
) -> None:
    frames = noisy(6, (16, 12), "uint16")
    writer = StreamWriter(
        tmp_path, "cam", {"axes": "TCYX", "channel_names": ["GFP", "RFP"]}, dtype="uint16",
        frame_shape=(16, 12), shape=[None, 2], fsync_interval=None,
    )  # fmt: skip
    writer.write(frames[:2])
    follower = AcquisitionFollower(viewer, tmp_path)
    assert [layer.name for layer in follower.layers] == [
        f"{tmp_path.name} GFP",
        f"{tmp_path.name} RFP",
    ]
    writer.write(frames[2:5])  # T1 whole, T2 begun: the newest frame is T2's GFP
    assert follower.refresh()
    for channel, layer in enumerate(follower.layers):
        assert layer.data.shape == (3, 16, 12)
        np.testing.assert_array_equal(np.asarray(layer.data[1]), frames[2 + channel])
    assert viewer.dims.current_step[0] == 2
    assert not np.asarray(follower.layers[1].data[2]).any(), "not written yet: 0"
    writer.finalize()


def test_a_follower_whose_acquisition_vanishes_gives_up_and_says_why(
    tmp_path: Path, viewer: ViewerModel, qtbot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    writer = StreamWriter(
        tmp_path / "gone", "cam", {"axes": "TYX"}, dtype="uint8", frame_shape=(8, 8),
        fsync_interval=None,
    )  # fmt: skip
    writer.write(np.ones((2, 8, 8), np.uint8))
    follower = follow(viewer, tmp_path / "gone", interval=0.05)
    writer.finalize()
    shutil.rmtree(tmp_path / "gone")
    qtbot.waitUntil(lambda: not follower.following, timeout=10_000)
    assert follower.failures == FAILURES_BEFORE_STOP
    assert "could not refresh" in caplog.text
    assert follower.layers[0].data.shape == (2, 8, 8), "what was shown stays"
