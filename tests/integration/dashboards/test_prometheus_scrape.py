"""A real Prometheus (Debian's package) scrapes the collector, a worker and the sink while
simulated traffic runs through the real broker, and the key series appear.

Every name asserted comes from :mod:`funnel.metrics`, the catalogue the alert rules and the
dashboards are checked against.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from funnel import metrics
from producers.messiness import Mess, arrivals
from producers.replay import send_http
from producers.simulator import simulate
from tests.servers import free_port

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str) -> object:
    with _DIRECT.open(url, timeout=10) as response:
        return json.loads(response.read())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)  # polling a condition, with a deadline


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(name: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        started.append((proc, log))
        return proc

    yield start
    for proc, _ in started:
        proc.terminate()
    for proc, log in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_prometheus_scrapes_every_component(
    kafka_bootstrap: str, tmp_path: Path, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    prefix = f"scrape{uuid.uuid4().hex[:6]}."
    funnel = [sys.executable, "-m", "funnel.cli"]
    ports = {"collector": free_port(), "worker": free_port(), "sink": free_port()}
    http_port = free_port()
    processes(
        "collector",
        *funnel,
        "serve",
        "--kafka",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
        "--port",
        str(http_port),
        "--metrics-port",  # /metrics on the main port needs a read key
        str(ports["collector"]),
        env={"FUNNEL_WRITE_KEYS": "scrape-key:scrape"},
    )
    processes(
        "worker",
        *funnel,
        "worker",
        "--kafka",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
        "--app-id",
        f"{prefix}worker",
        "--web-port",
        str(ports["worker"]),
        "--data-dir",
        str(tmp_path / "worker"),
    )
    processes(
        "sink",
        *funnel,
        "sink",
        "--kafka",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
        "--group",
        f"{prefix}sink",
        "--store",
        f"chdb://{tmp_path / 'store'}",
        "--metrics-port",
        str(ports["sink"]),
    )
    prometheus_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
        + "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            for job, port in ports.items()
        ),
        encoding="utf-8",
    )
    processes(
        "prometheus",
        shutil.which("prometheus") or "/usr/bin/prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    )
    api = f"http://127.0.0.1:{prometheus_port}/api/v1/query?query="

    def query(promql: str) -> list[dict[str, object]]:
        try:
            body = get_json(api + urllib.parse.quote(promql))
        except OSError:
            return []
        assert isinstance(body, dict)
        result = body.get("data", {}).get("result", [])  # type: ignore[union-attr]
        assert isinstance(result, list)
        return result

    def total(promql: str) -> float:
        return sum(float(r["value"][1]) for r in query(promql))  # type: ignore[index]

    wait_until(lambda: total("sum(up)") == 3, 120, "Prometheus to see all three components up")

    sim = simulate(300, seed=41, site_id="scrape")
    stream = arrivals(sim.events, Mess(malformed=0.02), seed=41)
    sent = send_http(stream, f"http://127.0.0.1:{http_port}", "scrape-key", size=50)
    assert sent.rejected > 0

    key_series = {
        f'{metrics.COLLECTOR_EVENTS}_total{{outcome="accepted"}}': sent.accepted,
        f"{metrics.COLLECTOR_REJECTIONS}_total": sent.rejected,
        f"{metrics.COLLECTOR_ACK_SECONDS}_count": 1,
        f'{metrics.WORKER_EVENTS}_total{{outcome="applied"}}': len(sim.events),
        f"{metrics.WORKER_BATCH_SECONDS}_count": 1,
        f"{metrics.WORKER_PROCESSING_LAG_SECONDS}_count": 1,
        f'{metrics.SINK_ROWS}_total{{table="events"}}': len(sim.events),
        f"{metrics.SINK_INSERT_SECONDS}_count": 1,
        f"{metrics.FRESHNESS_SECONDS}_count": len(sim.events),
        f'{metrics.STAGE_REACHED}_total{{funnel="sales",step="impression"}}': 1,
    }
    for series, at_least in key_series.items():
        wait_until(
            lambda series=series, at_least=at_least: total(series) >= at_least,  # type: ignore[misc]
            180,
            f"{series} >= {at_least} in Prometheus",
        )
    for gauge in (
        metrics.WORKER_CONSUMER_LAG,
        metrics.WORKER_STATE_PERSONS,
        metrics.SINK_CONSUMER_LAG,
        metrics.SINK_STORE_UP,
        metrics.SINK_PAUSED,
    ):
        wait_until(lambda gauge=gauge: bool(query(gauge)), 60, f"{gauge} in Prometheus")  # type: ignore[misc]
    assert total(metrics.SINK_STORE_UP) == 1
    assert total(f"{metrics.COLLECTOR_REJECTIONS}_total") == sent.rejected
