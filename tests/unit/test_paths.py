"""Output folders stay inside the data root, follow no link, and leave nothing when refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from framesink import StreamWriter
from framesink.core import ExistsPolicy, OutputFiles, printable
from framesink.store import Folder, PathError, open_output_folder

CAM = OutputFiles("cam", ".ome.tiff")


def _open(root: Path, output_path: str, name: str, policy: ExistsPolicy) -> Path:
    folder = open_output_folder(root, output_path, OutputFiles(name, ".ome.tiff"), policy)
    folder.close()
    return folder.path


@pytest.mark.parametrize(
    ("output_path", "output_name", "message"),
    [
        ("/etc", "x", "relative to the data root"),
        ("C:/windows", "x", "relative to the data root"),
        ("a/../../b", "x", "must not contain '..'"),
        ("..", "x", "must not contain '..'"),
        ("a\\b", "x", "backslashes"),
        ("a\nb", "x", "control or text-direction character U\\+000A"),
        ("a\x85b", "x", "U\\+0085"),
        ("a\u202eb", "x", "U\\+202E"),
        ("ok", "a\u2066b", "U\\+2066"),
        ("ok", "line\nbreak", "U\\+000A"),
        ("ok", "a/b", "plain file name"),
        ("ok", "..", "plain file name"),
        ("ok", "", "plain file name"),
        ("ok", " padded", "plain file name"),
        ("ok", "é" * 120, "too long"),
        ("exp/.framesink-recovery", "x", "reserved"),
        ("exp/framesink-journal.jsonl", "x", "reserved"),
        ("metadata.json/x", "x", "reserved"),
        ("ok", ".framesink-recovery", "reserved"),
        ("escape", "x", "leads outside the data root"),
        ("escape/sub", "x", "leads outside the data root"),
        ("alias/run", "x", "leads outside the data root"),
        ("real/inner/run", "x", "leads outside"),
        ("file", "x", "not a folder"),
    ],
)
def test_refused_locations_create_nothing(
    tmp_path: Path, output_path: str, output_name: str, message: str
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real")  # a link inside the root is refused too
    (root / "real" / "inner").symlink_to(outside)
    (root / "file").write_text("x")
    before = sorted(root.rglob("*"))
    with pytest.raises(PathError, match=message):
        _open(root, output_path, output_name, ExistsPolicy.INCREMENT)
    assert sorted(root.rglob("*")) == before
    assert list(outside.iterdir()) == []


def test_increment_and_error_policies(tmp_path: Path) -> None:
    first = _open(tmp_path, "run", "img", ExistsPolicy.INCREMENT)
    (first / "metadata.json").write_text("{}")
    second = _open(tmp_path, "run", "img", ExistsPolicy.INCREMENT)
    assert second == tmp_path / "run_1"
    (second / "img.ome.tiff.partial").write_bytes(b"")
    assert _open(tmp_path, "run", "img", ExistsPolicy.INCREMENT) == tmp_path / "run_2"
    with pytest.raises(PathError, match="already holds"):
        _open(tmp_path, "run", "img", ExistsPolicy.ERROR)
    with pytest.raises(PathError, match="already holds"):  # one metadata.json per folder
        _open(tmp_path, "run", "other", ExistsPolicy.ERROR)
    assert _open(tmp_path, "fresh", "img", ExistsPolicy.ERROR) == tmp_path / "fresh"


@pytest.mark.parametrize(
    "planted", ["cam.ome.tiff.partial", "framesink-journal.jsonl", "cam.frames.jsonl"]
)
def test_a_planted_link_is_never_written_through(tmp_path: Path, planted: str) -> None:
    """A dangling or real link in the folder, named like a file framesink creates."""
    root, outside = tmp_path / "root", tmp_path / "outside.bin"
    (root / "exp").mkdir(parents=True)
    (root / "exp" / planted).symlink_to(outside)
    if planted.endswith("frames.jsonl"):
        outside.write_text("victim\n")
        folder = open_output_folder(root, "exp", CAM, ExistsPolicy.INCREMENT)
        with StreamWriter(folder, "cam", {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2)) as w:
            w.write(np.ones((2, 2), "uint8"), [{"delta_t": 0.0}])
        assert outside.read_text() == "victim\n"
        assert not (root / "exp" / planted).is_symlink()
        return
    folder = open_output_folder(root, "exp", CAM, ExistsPolicy.INCREMENT)
    assert folder.path == root / "exp_1", "a folder holding the link is taken"
    folder.close()
    assert not outside.exists()


def test_metadata_temp_link_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    folder_path = tmp_path / "acq"
    folder_path.mkdir()
    (folder_path / ".metadata.json.tmp").symlink_to(outside)
    with StreamWriter(folder_path, "cam", {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2)) as w:
        w.write(np.ones((2, 2), "uint8"))
    assert outside.read_text() == "keep me"
    assert (folder_path / "metadata.json").is_file()
    assert not (folder_path / ".metadata.json.tmp").exists()


def test_a_folder_swapped_for_a_link_after_opening_changes_nothing(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    folder = open_output_folder(root, "exp/run", CAM, ExistsPolicy.INCREMENT)
    os.rename(root / "exp", root / "moved")
    (root / "exp").symlink_to(outside)
    with StreamWriter(folder, "cam", {"axes": "TYX"}, dtype="uint8", frame_shape=(2, 2)) as w:
        w.write(np.ones((2, 2), "uint8"))
    assert list(outside.iterdir()) == []
    assert (root / "moved/run/cam.ome.tiff").is_file()


def test_folder_create_refuses_existing_files(tmp_path: Path) -> None:
    with Folder.at(tmp_path) as folder:
        os.close(folder.create("a"))
        with pytest.raises(FileExistsError):
            folder.create("a")


def test_printable_escapes_what_would_forge_or_reorder_text() -> None:
    assert printable("cam\nINFO forged\u202e") == "cam\\nINFO forged\\u202e"
    assert printable("plain ünïcode") == "plain ünïcode"
