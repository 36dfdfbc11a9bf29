from __future__ import annotations

import pytest
from pydantic import ValidationError

from framesink import FrameLayout, LayoutError, MetaData, OutputParameters


@pytest.mark.parametrize(
    "axes", ["YX", "TYX", "ZYX", "CZYX", "TCZYX", "ZTYX", "CTYX", "TYXS", "YXS"]
)
def test_supported_axes_are_accepted(axes: str) -> None:
    assert MetaData(axes=axes).axes == axes


@pytest.mark.parametrize("axes", ["XY", "TTYX", "TYXZ", "QYX", "tyx", "", "TCZAYX", "YXSS"])
def test_unsupported_axes_say_what_is_allowed(axes: str) -> None:
    with pytest.raises(ValidationError, match="up to three of T, C, Z"):
        MetaData(axes=axes)


def test_extra_keys_are_preserved_in_order() -> None:
    metadata = MetaData(axes="TYX", notes={"free": ["json"]}, zeta=1, alpha="a")
    assert list(metadata.model_dump()) == ["axes", "notes", "zeta", "alpha"]
    assert metadata.model_dump()["notes"] == {"free": ["json"]}


def test_output_parameters_accept_str_and_path() -> None:
    from pathlib import Path

    assert OutputParameters(output_path=Path("/x"), output_name="n").output_path == Path("/x")
    assert OutputParameters(output_path="./o", output_name="n").output_path == "./o"


def test_layout_arithmetic() -> None:
    layout = FrameLayout.create("TCZYX", "uint16", [4, 6], [None, 2, 3])
    assert layout.frames_per_step == 6
    assert layout.capacity is None
    assert layout.padded_count(7) == 12
    assert layout.padded_count(0) == 6
    assert layout.file_shape(12) == (2, 2, 3, 4, 6)
    assert FrameLayout.create("ZYX", "uint8", [2, 2], [5]).capacity == 5
    assert FrameLayout.create("YX", "uint8", [2, 2]).capacity == 1


@pytest.mark.parametrize(
    ("axes", "dtype", "frame_shape", "shape", "message"),
    [
        ("TYX", "complex64", [2, 2], None, "dtype must be one of"),
        ("TYX", ">u2", [2, 2], None, "little-endian"),
        ("TYX", "uint8", [2, 2, 3], None, r"frame_shape must be 2"),
        ("TYXS", "uint8", [2, 2], None, r"frame_shape must be 3"),
        ("TYXS", "uint8", [2, 2, 5], None, "S .samples per pixel. must be 3 or 4"),
        ("TCZYX", "uint8", [2, 2], None, "give 'shape'"),
        ("TCZYX", "uint8", [2, 2], [None, 2], "must give 3 sizes"),
        ("TCZYX", "uint8", [2, 2], [None, None, 2], "only the first may be null"),
        ("TYX", "uint8", [0, 2], None, "positive integers"),
    ],
)
def test_bad_layouts_are_explained(
    axes: str, dtype: str, frame_shape: list[int], shape: list[int | None] | None, message: str
) -> None:
    with pytest.raises(LayoutError, match=message):
        FrameLayout.create(axes, dtype, frame_shape, shape)
