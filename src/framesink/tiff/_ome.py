"""OME-XML for a finished file (pure).

Every metadata key except ``notes`` goes into a MapAnnotation (JSON-encoded value), so
nothing is lost; a few well-known keys are also mapped onto their OME fields. Plane
elements are written for at most ``MAX_OME_PLANES`` frames, so that the description
(and the memory to build it) stays bounded; every frame's metadata stays in the sidecar.
"""

from __future__ import annotations

import json
import math
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

from ..core import FrameLayout, __version__

OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAP_NAMESPACE = "framesink/metadata"

OME_PIXEL_TYPES = {
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "float32": "float",
    "float64": "double",
}
PLANE_FIELDS = {
    "delta_t": ("DeltaT", "s"),
    "exposure_time": ("ExposureTime", "s"),
    "position_x": ("PositionX", "µm"),
    "position_y": ("PositionY", "µm"),
    "position_z": ("PositionZ", "µm"),
}
MAX_OME_PLANES = 100_000
_PLANES_PLACEHOLDER = "framesink-planes"
PHYSICAL_SIZE_FIELDS = {
    "physical_size_x": "PhysicalSizeX",
    "physical_size_y": "PhysicalSizeY",
    "physical_size_z": "PhysicalSizeZ",
}


def _tag(name: str) -> str:
    return f"{{{OME_NS}}}{name}"


def dimension_order(axes: str) -> str:
    """OME DimensionOrder (fastest first) for C-ordered frames over the leading axes."""
    leading = axes.split("YX", maxsplit=1)[0]
    fastest_first = leading[::-1]
    return "XY" + fastest_first + "".join(a for a in "ZCT" if a not in fastest_first)


def _positive_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def plane_attributes(frame_metadata: Mapping[str, Any]) -> dict[str, str]:
    """OME Plane attributes for the keys of one frame's metadata that OME knows."""
    attributes: dict[str, str] = {}
    for key, (field, unit) in PLANE_FIELDS.items():
        number = _finite_number(frame_metadata.get(key))
        if number is not None:
            attributes[field] = repr(number)
            attributes[f"{field}Unit"] = unit
    return attributes


def build_ome_xml(
    layout: FrameLayout,
    frames: int,
    metadata: Mapping[str, Any],
    name: str,
    planes: Iterable[tuple[int, Mapping[str, Any]]] = (),
) -> str:
    """Return the OME-XML document describing a file of ``frames`` (padded) frames.

    ``planes`` yields ``(frame index, frame metadata)`` in increasing index order.
    """
    ET.register_namespace("", OME_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(
        _tag("OME"),
        {
            "UUID": f"urn:uuid:{uuid.uuid4()}",
            "Creator": f"framesink {__version__}",
            f"{{{XSI_NS}}}schemaLocation": f"{OME_NS} {OME_NS}/ome.xsd",
        },
    )
    image = ET.SubElement(root, _tag("Image"), {"ID": "Image:0", "Name": name})
    pixels = _pixels_element(image, layout, frames, metadata)
    _channel_elements(pixels, layout, frames, metadata)
    ET.SubElement(pixels, _tag("TiffData"), {"IFD": "0", "PlaneCount": str(frames)})
    pixels.append(ET.Comment(_PLANES_PLACEHOLDER))
    _map_annotation(root, image, metadata)
    document = ET.tostring(root, encoding="unicode")
    placeholder = f"<!--{_PLANES_PLACEHOLDER}-->"
    head, tail = document.split(placeholder, 1)
    plane_xml = "".join(_plane_fragments(layout, frames, planes))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + plane_xml + tail


def _pixels_element(
    image: ET.Element, layout: FrameLayout, frames: int, metadata: Mapping[str, Any]
) -> ET.Element:
    sizes = layout.sizes(frames)
    samples = sizes.get("S", 1)
    attributes = {
        "ID": "Pixels:0",
        "DimensionOrder": dimension_order(layout.axes),
        "Type": OME_PIXEL_TYPES[layout.dtype.name],
        "SizeX": str(sizes["X"]),
        "SizeY": str(sizes["Y"]),
        "SizeZ": str(sizes.get("Z", 1)),
        "SizeC": str(sizes.get("C", 1) * samples),
        "SizeT": str(sizes.get("T", 1)),
        "BigEndian": "false",
        "Interleaved": "true" if samples > 1 else "false",
        "SignificantBits": str(layout.dtype.itemsize * 8),
    }
    for key, field in PHYSICAL_SIZE_FIELDS.items():
        size = _positive_number(metadata.get(key))
        if size is not None:
            attributes[field] = repr(size)
            attributes[f"{field}Unit"] = "µm"
    time_increment = _positive_number(metadata.get("time_increment"))
    if time_increment is not None:
        attributes["TimeIncrement"] = repr(time_increment)
        attributes["TimeIncrementUnit"] = "s"
    return ET.SubElement(image, _tag("Pixels"), attributes)


def _channel_elements(
    pixels: ET.Element, layout: FrameLayout, frames: int, metadata: Mapping[str, Any]
) -> None:
    sizes = layout.sizes(frames)
    samples = sizes.get("S", 1)
    names = metadata.get("channel_names")
    channel_count = sizes.get("C", 1)
    for channel in range(channel_count):
        attributes = {"ID": f"Channel:0:{channel}", "SamplesPerPixel": str(samples)}
        if isinstance(names, list) and len(names) == channel_count:
            attributes["Name"] = str(names[channel])
        ET.SubElement(pixels, _tag("Channel"), attributes)


def _plane_fragments(
    layout: FrameLayout,
    frames: int,
    planes: Iterable[tuple[int, Mapping[str, Any]]],
) -> Iterator[str]:
    """Plane elements as text: an element tree of a million planes would not fit."""
    leading_shape = layout.file_shape(frames)[: len(layout.leading_axes)]
    written = 0
    for index, frame_metadata in planes:
        if not 0 <= index < frames:
            continue
        attributes = plane_attributes(frame_metadata)
        if not attributes:
            continue
        if written == MAX_OME_PLANES:
            yield (
                f"<!-- Plane elements stop after {MAX_OME_PLANES} frames; every frame's "
                "metadata is in the .frames.jsonl sidecar -->"
            )
            return
        coordinates = dict.fromkeys("ZCT", 0)
        coordinates.update(_unravel(index, layout.leading_axes, leading_shape))
        plane = {f"The{axis}": str(coordinates[axis]) for axis in "ZTC"} | attributes
        text = " ".join(f"{key}={quoteattr(value)}" for key, value in plane.items())
        yield f"<Plane {text} />"
        written += 1


def _unravel(index: int, axes: str, shape: tuple[int, ...]) -> dict[str, int]:
    """C-order coordinates of frame ``index`` over the leading axes."""
    coordinates = {}
    for axis, size in zip(reversed(axes), reversed(shape), strict=True):
        index, coordinates[axis] = divmod(index, size)
    return coordinates


def _map_annotation(root: ET.Element, image: ET.Element, metadata: Mapping[str, Any]) -> None:
    kept = {key: value for key, value in metadata.items() if key != "notes"}
    if not kept:
        return
    ET.SubElement(image, _tag("AnnotationRef"), {"ID": "Annotation:0"})
    annotations = ET.SubElement(root, _tag("StructuredAnnotations"))
    annotation = ET.SubElement(
        annotations, _tag("MapAnnotation"), {"ID": "Annotation:0", "Namespace": MAP_NAMESPACE}
    )
    value = ET.SubElement(annotation, _tag("Value"))
    for key, item in kept.items():
        entry = ET.SubElement(value, _tag("M"), {"K": str(key)})
        entry.text = json.dumps(item, ensure_ascii=False)
