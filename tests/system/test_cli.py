"""Configuration, the example files, the demo and the synthetic camera script."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tifffile

from framesink.daemon import load_settings

from ..helpers import (
    DaemonProcess,
    pattern,
    read_metadata,
    read_ome_zarr,
    read_tiff,
    run_fake_camera,
    run_framesink,
    start_tyx,
    validate_ome,
)

REPO = Path(__file__).parents[2]


def test_settings_precedence_defaults_file_env_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "framesink.toml"
    config.write_text(
        'idle_timeout = 7.0\nqueue_bytes = "256MiB"\nbind = ["ipc:///tmp/x"]\nsocket = "pull"\n'
    )
    monkeypatch.delenv("FRAMESINK_CONFIG", raising=False)
    assert load_settings(None).idle_timeout == 60.0
    from_file = load_settings(config)
    assert (from_file.idle_timeout, int(from_file.queue_bytes), from_file.bind) == (
        7.0,
        256 << 20,
        ["ipc:///tmp/x"],
    )
    monkeypatch.setenv("FRAMESINK_IDLE_TIMEOUT", "8")
    monkeypatch.setenv("FRAMESINK_BIND", '["tcp://127.0.0.1:7000"]')
    from_env = load_settings(config)
    assert (from_env.idle_timeout, from_env.bind, from_env.socket) == (
        8.0,
        ["tcp://127.0.0.1:7000"],
        "pull",
    )
    from_cli = load_settings(config, idle_timeout=9.0, socket="sub", bind=None)
    assert (from_cli.idle_timeout, from_cli.socket, from_cli.bind) == (
        9.0,
        "sub",
        ["tcp://127.0.0.1:7000"],
    )
    monkeypatch.setenv("FRAMESINK_CONFIG", str(config))
    monkeypatch.delenv("FRAMESINK_IDLE_TIMEOUT")
    assert load_settings(None).idle_timeout == 7.0


def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('socket = "carrier-pigeon"\nunknown_key = 1\n')
    result = run_framesink("serve", "--config", str(config), timeout=60)
    assert result.returncode == 2
    assert "bad configuration" in result.stderr
    assert "socket" in result.stderr
    missing = run_framesink("serve", "--config", str(tmp_path / "nope.toml"), timeout=60)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_example_config_is_complete_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMESINK_CONFIG", raising=False)
    example = REPO / "config/framesink.toml"
    settings = load_settings(example)
    assert settings.data_root == Path("/data/framesink")
    fields = set(type(settings).model_fields)
    documented = {
        line.removeprefix("# ").split("=")[0].strip()
        for line in example.read_text().splitlines()
        if ("=" in line and not line.startswith("#"))
        or (line.startswith("# ") and line[2:].split(" =")[0] in fields)
    }
    assert documented == fields


def test_systemd_unit_is_notify_and_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "config/framesink.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert (service["NoNewPrivileges"], service["ProtectSystem"]) == ("yes", "strict")
    assert service["ReadWritePaths"] == str(load_settings(REPO / "config/framesink.toml").data_root)
    assert service["User"] == "framesink"


def test_demo_writes_a_real_acquisition(tmp_path: Path) -> None:
    result = run_framesink(
        "demo",
        "--data-root",
        str(tmp_path),
        "--frames",
        "30",
        "--shape",
        "64",
        "48",
        "--rate",
        "0",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pixels go through shared memory" in result.stderr, "the fastest path on Linux"
    tiff = tmp_path / "demo" / "synthetic.ome.tiff"
    assert f"wrote {tiff}" in result.stdout
    kind, pixels, xml = read_tiff(tiff)
    assert (kind, pixels.shape) == ("ome", (30, 64, 48))
    assert pixels.std() > 0
    assert len(validate_ome(xml).images[0].pixels.planes) == 30
    assert read_metadata(tiff.parent)["framesink"]["complete"] is True
    again = run_framesink(
        "demo", "--data-root", str(tmp_path), "--frames", "5", "--shape", "8", "8", "--rate", "0"
    )
    assert again.returncode == 0, again.stderr
    assert f"wrote {tmp_path / 'demo_1' / 'synthetic.ome.tiff'}" in again.stdout
    assert read_tiff(tiff)[1].shape == (30, 64, 48)


def test_fake_camera_script_publishes_to_a_daemon(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon()
    result = run_fake_camera(
        daemon,
        "--count", "12", "--shape", "32", "32", "3", "--dtype", "uint8",
        "--acquisition", "cam", "--chunk", "5",
        kind="pub",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "12/12" in result.stderr
    assert "daemon wrote 12 frames" in result.stdout
    entry = daemon.wait_finished("cam")
    assert (entry.frames_written, entry.complete) == (12, True)
    _, pixels, _ = read_tiff(daemon.data_root / "synthetic/camera.ome.tiff")
    assert pixels.shape == (12, 32, 32, 3)
    record = json.loads((daemon.data_root / "synthetic/metadata.json").read_text())
    assert record["frames_sent"] == 12


def test_console_script_is_registered() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "framesink"]
    assert script.value == "framesink.cli:main"
    assert run_framesink("--version").stdout.startswith("framesink ")


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own checker (present on the project's machines) finds nothing wrong."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check config/framesink.service"
    script = Path(sys.executable).with_name("framesink")
    unit = tmp_path / "framesink.service"
    unit.write_text(
        (REPO / "config/framesink.service")
        .read_text()
        .replace("/opt/framesink/bin/framesink", str(script))
    )
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == "", checked.stderr


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first Python block is what newcomers paste: it must run and do what it says."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    monkeypatch.chdir(tmp_path)
    output = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=120, check=False
    )
    assert output.returncode == 0, output.stderr
    assert output.stdout.strip() == "[[30, 39]]"  # the gap and the padding after it: one range
    assert read_tiff(tmp_path / "out/run1/cells.ome.tiff")[1].shape == (4, 2, 5, 512, 512)
    assert read_tiff(tmp_path / "output/example.ome.tiff")[1].shape == (10, 256, 256)
    assert read_ome_zarr(tmp_path / "out/run2/cells.ome.zarr")[0].shape == (10, 512, 512)
    reading = subprocess.run(
        [sys.executable, "-c", blocks[2]], capture_output=True, text=True, timeout=60, check=False
    )
    assert reading.returncode == 0, reading.stderr
    assert reading.stdout.splitlines() == ["TCZYX (4, 2, 5, 512, 512)", "[[30, 39]] False"]
    headless = (  # napari's viewer model stands in for its window (no OpenGL here)
        "import warnings; warnings.simplefilter('ignore')\n"
        "import napari, napari.components\n"
        "napari.Viewer = napari.components.ViewerModel\n"
        "napari.run = lambda: print([(layer.name, layer.data.shape) for layer in viewer.layers])\n"
    )
    viewing = subprocess.run(
        [sys.executable, "-c", headless + blocks[3]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert viewing.returncode == 0, viewing.stderr
    assert viewing.stdout.strip() == str(
        [(f"run1 C{channel}", (4, 5, 512, 512)) for channel in (0, 1)]
    )


def test_readme_publisher_example_runs(start_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = start_daemon()
    block = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)[1]
    code = block.replace("tcp://127.0.0.1:5555", daemon.ingest[0]).replace(
        "tcp://127.0.0.1:5556", daemon.control
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert output.returncode == 0, output.stderr
    assert output.stdout.split() == [
        str(daemon.data_root / "2026/run-42/cam0.ome.tiff"),
        "20",
        "True",
    ]
    assert read_metadata(daemon.data_root / "2026/run-42")["notes"] == "final notes"


@pytest.mark.parametrize("how", ["stop", "abort"])
def test_framesink_stop_and_abort_end_an_open_acquisition(
    start_daemon: Callable[..., DaemonProcess], how: str
) -> None:
    """Operating: an operator ends a stuck acquisition from the command line."""
    from framesink import Publisher

    daemon = start_daemon(socket="pull")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        run = start_tyx(publisher, "stuck", dtype="uint8", frame_shape=(4, 4))
        run.send(pattern(3, (4, 4), "uint8"))
        daemon.wait_for(lambda s: (e := s.entry("stuck")) is not None and e.frames_written == 3)
        result = run_framesink(how, "stuck", "--control", daemon.control)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{how} stuck: finished, 3 frames -> ")
        again = run_framesink(how, "stuck", "--control", daemon.control)
        assert again.returncode == 1
        assert "is not open (it already ended)" in again.stderr
        missing = run_framesink(how, "nobody", "--control", daemon.control)
        assert missing.returncode == 1
        assert "'nobody' is not open" in missing.stderr
    record = read_metadata(daemon.data_root / "stuck")["framesink"]
    assert (record["reason"], record["frames_written"]) == (how, 3)
    if how == "abort":
        assert read_metadata(daemon.data_root / "stuck")["abort_reason"] == (
            "aborted from the control endpoint"
        )


def test_demo_without_a_data_root_says_where_its_data_stays(tmp_path: Path) -> None:
    """Operating, item 9: each demo left ~100 MiB in /tmp with no word about it."""
    result = run_framesink(
        "demo", "--frames", "4", "--shape", "16", "16", "--rate", "0",
        env={"TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "stays until you remove it" in line]
    folder = Path(line.rsplit("rm -r ", 1)[1])
    assert folder.parent == tmp_path
    assert (folder / "demo" / "metadata.json").is_file()
    left = {path.name for path in tmp_path.iterdir()}
    assert left == {folder.name}, "the sockets and keys of the demo are gone"


def test_demo_writes_compressed_pages_when_asked(tmp_path: Path) -> None:
    result = run_framesink(
        "demo", "--data-root", str(tmp_path), "--frames", "12", "--shape", "64", "48",
        "--rate", "0", "--compression", "deflate",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(deflate)" in result.stdout
    tiff = tmp_path / "demo" / "synthetic.ome.tiff"
    with tifffile.TiffFile(tiff) as opened:
        assert {int(page.compression) for page in opened.pages} == {8}
    assert read_metadata(tiff.parent)["framesink"]["compression"] == "deflate"
    assert read_tiff(tiff)[1].shape == (12, 64, 48)


def test_demo_writes_an_ome_zarr_when_asked(tmp_path: Path) -> None:
    result = run_framesink(
        "demo", "--data-root", str(tmp_path), "--frames", "12", "--shape", "64", "48",
        "--rate", "0", "--format", "ome-zarr", "--compression", "blosc-lz4",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    image = tmp_path / "demo" / "synthetic.ome.zarr"
    assert f"wrote {image}" in result.stdout
    assert "napari" in result.stdout
    pixels, attributes = read_ome_zarr(image)
    assert pixels.shape == (12, 64, 48)
    assert pixels.any()
    assert attributes["ome"]["version"] == "0.5"
    record = read_metadata(image.parent)["framesink"]
    assert (record["format"], record["compression"]) == ("ome-zarr", "blosc-lz4")
