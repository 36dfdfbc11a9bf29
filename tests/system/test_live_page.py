"""The daemon's live page: /api/status equal to the control status, thumbnails of the
newest frame that change while frames arrive, private names under CURVE, and the page
itself in a real headless browser (Debian's chromium), updating without a reload."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest

from framesink import DaemonStatus, Publisher
from framesink.core import AcquisitionState
from framesink.daemon._page import LivePage

from ..helpers import DaemonProcess

SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "live-page.png"


def _base(daemon: DaemonProcess) -> str:
    url = daemon.status().metrics
    assert url is not None
    return url.removesuffix("/metrics")


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _frames(count: int, first: int) -> np.ndarray[Any, Any]:
    """Frames that differ from each other: a gradient whose direction turns with the index."""
    rows, columns = np.indices((128, 96))
    return np.stack(
        [
            ((rows * (i % 3 + 1) + columns * (i % 5)) * 10).astype("uint16")
            for i in range(first, first + count)
        ]
    )


def test_api_status_is_the_control_status_and_thumbnails_follow_the_frames(
    start_daemon: Any,
) -> None:
    daemon: DaemonProcess = start_daemon("--metrics", "127.0.0.1:0", socket="pull")
    base = _base(daemon)
    with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
        run = publisher.start(
            "cam-1", {"axes": "TYX"}, output_path="cam1", output_name="cam", dtype="uint16",
            frame_shape=(128, 96),
        )  # fmt: skip
        run.send(_frames(5, 0))
        daemon.wait_for(lambda s: (e := s.entry("cam-1")) is not None and e.frames_written == 5)
        status, kind, body = _get(f"{base}/acquisitions/cam-1/latest.png")
        assert (status, kind) == (200, "image/png")
        first = imagecodecs.png_decode(body)
        assert first.dtype == np.uint8
        assert first.shape == (128, 96)
        assert first.min() == 0
        assert first.max() == 255  # automatic contrast
        time.sleep(0.3)
        run.send(_frames(3, 7), index=5)
        daemon.wait_for(lambda s: (e := s.entry("cam-1")) is not None and e.frames_written == 8)
        second = imagecodecs.png_decode(_get(f"{base}/acquisitions/cam-1/latest.png")[2])
        assert not np.array_equal(first, second), "the thumbnail follows the newest frame"
        run.stop(wait=20)
    assert _get(f"{base}/acquisitions/nobody/latest.png")[0] == 404
    daemon.wait_for(lambda s: s.acquisitions[0].state == "finished")
    served = json.loads(_get(f"{base}/api/status")[2])
    control = daemon.status().model_dump(mode="json")
    for varying in ("uptime_s", "free_bytes"):
        served.pop(varying)
        control.pop(varying)
    assert served == control
    status, kind, page = _get(f"{base}/")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert b"api/status" in page
    assert b"http" not in page.replace(b"http-equiv", b""), "nothing from other hosts"
    assert _get(f"{base}/metrics")[0] == 200
    assert daemon.stop() == 0


def test_with_private_names_the_status_names_acquisitions_by_token() -> None:
    """What the page serves when CURVE is on and names are not allowed."""
    entry = {
        "acquisition": "patient-0042", "state": "open", "path": "/data/patient-0042/cam.ome.tiff",
        "frames_written": 3, "frames_missing": 0, "frames_dropped": 0, "messages_lost": 0,
        "bytes_written": 6, "direct_io": True, "queued_bytes": 0, "frames_discarded_after_error": 0,
        "frames_per_s": 1.0, "started": "2026-12-04T00:00:00Z", "complete": False,
        "reason": None, "error": "disk of patient-0042", "rejected_messages": 0,
    }  # fmt: skip
    status = DaemonStatus.model_validate(
        {
            "version": "1", "state": "running", "recovering": False, "uptime_s": 1.0,
            "data_root": "/data", "free_bytes": 1, "socket": "pull", "ingest": ["tcp://x"],
            "queued_bytes": 0, "queue_limit_bytes": 1, "counters": {}, "acquisitions": [entry],
            "recent_errors": [
                {"time": "t", "reason": "orphan", "detail": "patient-0042", "acquisition": "patient-0042"}
            ],
        }
    )  # fmt: skip
    frames = {"patient-0042": np.arange(64, dtype=np.uint16).reshape(8, 8)}

    def fallback(environ: Any, start: Any) -> list[bytes]:
        start("404 Not Found", [])
        return [b""]

    page = LivePage(lambda: status, frames.get, fallback, show_names=False)
    served = json.dumps(page.status_document())
    assert "patient" not in served
    (shown,) = page.status_document()["acquisitions"]
    assert shown["acquisition"].startswith("acq-")
    assert shown["state"] == AcquisitionState.OPEN.value
    replies: list[str] = []

    def start(code: str, headers: Any, info: Any = None) -> Any:
        replies.append(code)
        return replies.append

    body = page({"PATH_INFO": f"/acquisitions/{shown['acquisition']}/latest.png"}, start)
    assert replies == ["200 OK"]
    assert imagecodecs.png_decode(b"".join(body)).shape == (8, 8)
    page({"PATH_INFO": "/acquisitions/patient-0042/latest.png"}, start)
    assert replies[-1] == "404 Not Found", "a real name is not an address when names are private"
    named = LivePage(lambda: status, frames.get, fallback, show_names=True)
    assert "patient-0042" in json.dumps(named.status_document())


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,720"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_the_page_in_a_headless_browser_shows_the_count_rising_and_the_thumbnail(
    start_daemon: Any,
) -> None:
    daemon: DaemonProcess = start_daemon("--metrics", "127.0.0.1:0", socket="pull")
    base = _base(daemon)
    browser = _browser()
    try:
        with Publisher(daemon.ingest, control=daemon.control, kind="push") as publisher:
            runs = [
                publisher.start(
                    name,
                    {"axes": "TYX"},
                    output_path=name,
                    output_name="cam",
                    dtype="uint16",
                    frame_shape=(128, 96),
                    format=image_format,
                )
                for name, image_format in (("left", "ome-tiff"), ("right", "ome-zarr"))
            ]
            for run in runs:
                run.send(_frames(4, 0))
            browser.get(base + "/")
            counts = _shown_frames(browser, "left", lambda n: n >= 4)
            for run in runs:
                run.send(_frames(6, 4), index=4)
            later = _shown_frames(browser, "left", lambda n: n >= 10)
            assert later > counts
            assert browser.execute_script("return performance.navigation.type") == 0, "no reload"
            assert browser.execute_script(
                "const i = document.querySelector('#card-left img');"
                "return i.complete && i.naturalWidth > 0"
            )
            if os.environ.get("FRAMESINK_SCREENSHOT"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                browser.save_screenshot(str(SCREENSHOT))
            runs[0].stop(wait=20)
            _wait(lambda: "left" in browser.find_element("id", "recent").text)
            runs[1].stop(wait=20)
    finally:
        browser.quit()
    assert daemon.stop() == 0


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("the page did not show it in time")
        time.sleep(0.1)


def _shown_frames(browser: Any, name: str, until: Any) -> int:
    shown = [0]

    def reached() -> bool:
        value = browser.execute_script(
            f"const b = document.querySelector('#card-{name} .big');"
            "return b ? Number(b.dataset.frames) : -1"
        )
        shown[0] = int(value)
        loaded = browser.execute_script(
            f"const i = document.querySelector('#card-{name} img');"
            "return !!i && i.complete && i.naturalWidth > 0"
        )
        return bool(until(shown[0]) and loaded)

    _wait(reached)
    return shown[0]
