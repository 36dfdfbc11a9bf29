"""The Prometheus endpoint says what `framesink status` says; the dashboard is sound."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import msgpack
import zmq
from prometheus_client.parser import text_string_to_metric_families

from framesink import Publisher
from framesink.core import Counter, DaemonStatus

from ..helpers import DaemonProcess, pattern, run_framesink, start_tyx

StartDaemon = Callable[..., DaemonProcess]
DASHBOARD = Path(__file__).parents[2] / "config" / "grafana-dashboard.json"


def _scrape(url: str) -> dict[str, float]:
    """Every sample as ``name{label="value"}`` -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _counters(status: DaemonStatus) -> dict[str, int]:
    return {f"framesink_{c.value}_total": status.counters.value(c) for c in Counter}


def test_metrics_equal_the_status_during_and_after_an_acquisition(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon("--metrics", "127.0.0.1:0", socket="pull")
    url = daemon.status().metrics
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    with Publisher(daemon.ingest, kind="push", control=daemon.control) as publisher:
        run = start_tyx(publisher, "dash", dtype="uint16", frame_shape=(64, 64))
        run.send(pattern(30, (64, 64), "uint16"), chunk=3)
        before = daemon.wait_for(lambda s: s.counters.frames_received == 30)
        during = _scrape(url)
        after = daemon.status()
        for name, value in _counters(before).items():
            assert value <= during[name] <= _counters(after)[name], name
        run.send(pattern(2, (64, 64), "uint16"), index=40)
        run.stop(wait=20)
    with zmq.Context() as context, context.socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(daemon.ingest[0])
        orphan = {"v": 1, "type": "stop", "acquisition": "nobody", "seq": 1}
        push.send_multipart([b"", msgpack.packb(orphan)])
    # Both peers (the publisher and the orphan's socket) are gone: nothing counts on.
    status = daemon.wait_for(
        lambda s: s.counters.orphan_messages == 1 and s.counters.peer_disconnects == 2
    )

    scraped = _scrape(url)
    assert {name: scraped[name] for name in _counters(status)} == _counters(status)
    assert status.counters.frames_missing == 10
    assert scraped['framesink_rejected_messages_total{reason="orphan"}'] == 1
    assert scraped['framesink_rejected_messages_total{reason="payload_size"}'] == 0, (
        "every reason has its series from the start"
    )
    assert scraped["framesink_open_acquisitions"] == 0
    assert scraped["framesink_queued_bytes"] == status.queued_bytes
    assert scraped["framesink_queue_limit_bytes"] == status.queue_limit_bytes
    assert scraped["framesink_free_bytes"] > 0
    assert scraped["framesink_write_seconds_count"] >= 1
    assert not any("dash" in name for name in scraped), "no per-acquisition labels"
    assert daemon.stop() == 0


def test_metrics_are_off_by_default_and_a_bad_address_is_refused(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    assert start_daemon().status().metrics is None
    result = run_framesink(
        "serve", "--data-root", str(tmp_path / "r"), "--metrics", "localhost", timeout=30
    )
    assert result.returncode == 2
    assert "metrics must be HOST:PORT" in result.stderr


def test_the_grafana_dashboard_uses_only_metrics_the_daemon_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 30
    exported = {f"framesink_{c.value}_total" for c in Counter} | {
        "framesink_rejected_messages_total",
        "framesink_open_acquisitions",
        "framesink_queued_bytes",
        "framesink_queue_limit_bytes",
        "framesink_free_bytes",
        "framesink_recovery_failures",
        "framesink_write_seconds_bucket",
        "framesink_write_seconds_count",
        "framesink_write_seconds_sum",
    }
    titles, used = [], set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        titles.append(panel["title"].lower())
        assert panel["type"] in {"timeseries", "stat", "gauge"}
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            used |= set(re.findall(r"framesink_[a-z_]+", target["expr"]))
    assert used <= exported, used - exported
    for needed in ("ingest", "written", "missing", "queue", "free disk", "auth"):
        assert any(needed in title for title in titles), needed
    variable = dashboard["templating"]["list"][0]
    assert (variable["name"], variable["type"]) == ("datasource", "datasource")
