"""Output folders stay inside the data root; taken folders are never reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from framesink.tiff import ExistsPolicy, PathError, resolve_output_folder


@pytest.mark.parametrize(
    ("output_path", "output_name", "message"),
    [
        ("/etc", "x", "relative to the data root"),
        ("C:/windows", "x", "relative to the data root"),
        ("a/../../b", "x", "must not contain '..'"),
        ("..", "x", "must not contain '..'"),
        ("a\\b", "x", "backslashes"),
        ("a\nb", "x", "control characters"),
        ("ok", "a/b", "plain file name"),
        ("ok", "..", "plain file name"),
        ("ok", "", "plain file name"),
        ("ok", " padded", "plain file name"),
        ("escape", "x", "leads outside the data root"),
        ("escape/sub", "x", "leads outside the data root"),
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
    (root / "file").write_text("x")
    before = sorted(root.rglob("*"))
    with pytest.raises(PathError, match=message):
        resolve_output_folder(root, output_path, output_name, ExistsPolicy.INCREMENT)
    assert sorted(root.rglob("*")) == before
    assert list(outside.iterdir()) == []


def test_symlink_inside_the_root_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    folder = resolve_output_folder(tmp_path, "alias/run", "x", ExistsPolicy.INCREMENT)
    assert folder.is_dir()
    assert (tmp_path / "real/run").is_dir()


def test_increment_and_error_policies(tmp_path: Path) -> None:
    first = resolve_output_folder(tmp_path, "run", "img", ExistsPolicy.INCREMENT)
    (first / "metadata.json").write_text("{}")
    second = resolve_output_folder(tmp_path, "run", "img", ExistsPolicy.INCREMENT)
    assert second == tmp_path / "run_1"
    (second / "img.ome.tiff.partial").write_bytes(b"")
    assert (
        resolve_output_folder(tmp_path, "run", "img", ExistsPolicy.INCREMENT) == tmp_path / "run_2"
    )
    with pytest.raises(PathError, match="already holds"):
        resolve_output_folder(tmp_path, "run", "img", ExistsPolicy.ERROR)
    with pytest.raises(PathError, match="already holds"):  # one metadata.json per folder
        resolve_output_folder(tmp_path, "run", "other", ExistsPolicy.ERROR)
    assert resolve_output_folder(tmp_path, "fresh", "img", ExistsPolicy.ERROR) == tmp_path / "fresh"
