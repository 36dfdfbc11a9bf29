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


def _documented_keys(heading: str) -> list[str]:
    """First-column keys of the table under ``### heading`` in docs/protocol.md."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs/protocol.md").read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)


@pytest.mark.parametrize(
    ("heading", "model"),
    [
        ("Status reply", "DaemonStatus"),
        ("Counters", "CounterValues"),
        ("Acquisition entry", "AcquisitionEntry"),
    ],
)
def test_protocol_doc_lists_exactly_the_status_keys(heading: str, model: str) -> None:
    import framesink.core

    fields = list(getattr(framesink.core, model).model_fields)
    assert _documented_keys(heading) == fields


def test_every_counter_is_a_field_and_every_field_a_counter() -> None:
    from framesink.core import Counter, CounterValues

    assert [c.value for c in Counter] == [
        f for f in CounterValues.model_fields if f != "rejected_by_reason"
    ]


def test_every_public_name_is_documented() -> None:
    import inspect

    import framesink

    undocumented = [
        name
        for name in framesink.__all__
        if (inspect.isclass(obj := getattr(framesink, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert not undocumented


def test_the_rejection_reasons_are_the_documented_ones() -> None:
    """Metrics show every reason from the start (0 until the first rejection); the list
    and docs/protocol.md's *Errors* table are one set."""
    import re
    from pathlib import Path

    from framesink.core import REJECTION_REASONS

    text = (Path(__file__).parents[2] / "docs/protocol.md").read_text()
    table = text.split("| reason | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = [
        code
        for line in table.splitlines()
        if (cell := re.match(r"^\| (.+?) \|", line))
        for code in re.findall(r"`([a-z_]+)`", cell.group(1))
    ]
    assert documented == list(REJECTION_REASONS)


def test_the_frame_counters_are_defined_once() -> None:
    """The record and the status entry report every counter of FrameCounts, typed alike,
    and the ledger fills them all: a new counter is added in FrameCounts and nowhere
    else goes unnoticed."""
    from framesink.core import AcquisitionEntry, AcquisitionRecord, Ledger
    from framesink.core._record import FrameCounts

    counters = FrameCounts.model_fields
    for model in (AcquisitionRecord, AcquisitionEntry):
        for name, field in counters.items():
            assert name in model.model_fields, f"{model.__name__} lacks {name}"
            assert model.model_fields[name].annotation == field.annotation, (model, name)
    ledger = Ledger("a", FrameLayout.create("TYX", "uint8", [2, 2], [4]))
    ledger.note_written(2)
    ledger.note_missing(2, 1)
    ledger.note_dropped(3)
    ledger.note_lost_messages(4)
    assert ledger.counts() == FrameCounts(
        frames_written=2, frames_missing=1, frames_dropped=3, messages_lost=4, bytes_written=8
    )
    assert AcquisitionEntry.refused("a", "bad_output", "x", "now").frames_written == 0
