"""Hostile values in every report parameter (issue 19): through the report API and the CLI,
each is refused with a 400 / exit 2 or answered as a plain value, never run as SQL (no engine
error, no 500) and never changing the store. The store is the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.gate import CommitGate
from storage.reports.api import LiveReports
from storage.reports.catalog import REPORTS
from stream_processors.embedded import EmbeddedPipeline, GatedPipeline
from tests.servers import READ_HEADERS, READ_KEYS

HOSTILE = (
    "'; DROP TABLE events; --",
    "x' OR '1'='1",
    "1) UNION SELECT name FROM system.users --",
    "{site:String}",
    "`events`\\'",
    "</td><script>alert(1)</script>",
)


def forms(parameter: str, value: str) -> list[str]:
    """``value`` as such, and wrapped so that the parameter's own parser accepts it and it
    reaches a query as a value (a condition, a step, a property name)."""
    wrapped = {
        "where": [f"utm_source={value}", f"property:{value}^={value}"],
        "steps": [f"click[utm_source={value}],lead", f"/{value},lead"],
        "by": [f"property:{value}"],
    }
    return [value, *wrapped.get(parameter, [])]


@pytest.fixture
def api(store: ChdbStore) -> Iterator[tuple[TestClient, ChdbStore]]:
    config = CoreConfig.default()
    pipeline = EmbeddedPipeline(store, config)
    pipeline.submit_all(simulate(60, seed=19, site_id="shop").events)
    pipeline.flush()
    pipeline.close()
    gate = CommitGate()
    live = LiveReports(store, config.funnels, gate)
    delivery = EmbeddedDelivery(GatedPipeline(store, config, gate))
    settings = CollectorSettings(read_keys=READ_KEYS, rate_limits=None)  # type: ignore[arg-type]
    headers = {**READ_HEADERS, "host": "localhost"}
    with TestClient(create_app(settings, delivery, live=live), headers=headers) as client:
        yield client, store


def fingerprint(store: ChdbStore) -> list[dict[str, object]]:
    return store.query(
        "SELECT name, total_rows FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": store.database},
    )


def test_every_report_parameter_takes_hostile_values_as_values(
    api: tuple[TestClient, ChdbStore],
) -> None:
    client, store = api
    before = fingerprint(store)
    tried = answered = 0
    for name, spec in REPORTS.items():
        for parameter in spec.parameters:
            for value in HOSTILE:
                for given in forms(parameter, value):
                    query = urllib.parse.urlencode({parameter: given})
                    response = client.get(f"/api/reports/{name}?{query}")
                    tried += 1
                    where = f"{name}?{parameter}={given!r}"
                    assert response.status_code in (200, 400), (where, response.text)
                    assert "DB::Exception" not in response.text, where
                    assert "Code:" not in response.text, where
                    if response.status_code == 200:
                        answered += 1
                    else:
                        assert response.json()["error"] == "bad_report_request", where
    assert fingerprint(store) == before
    assert tried > 300
    assert answered > 20  # hostile text reached queries as bound values, and was answered


def test_the_cli_takes_hostile_values_as_values(tmp_path: Path) -> None:
    funnel = str(Path(sys.executable).with_name("funnel"))
    store = f"chdb://{tmp_path / 'store'}"
    made = subprocess.run(
        [funnel, "demo", "--persons", "60", "--store", store],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    value = HOSTILE[0]
    runs = [
        ["funnel", "--where", f"utm_source={value}"],
        ["funnel", "--steps", f"click[utm_source={value}],lead", "--by", f"property:{value}"],
        ["channels", "--where", f"utm_campaign^={value}", "--by", "utm_source"],
        ["people", "--steps", f"/{value},lead"],
        ["funnel", "--site", value],
        ["attribution", "--conversion", value],
    ]
    for args in runs:
        done = subprocess.run(
            [funnel, "report", *args, "--store", store, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode in (0, 2), (args, done.stderr)
        assert "DB::Exception" not in done.stderr + done.stdout, args
        if done.returncode == 0:
            json.loads(done.stdout)  # an answer, in its format
    sites = subprocess.run(
        [funnel, "sites", "--store", store, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(sites.stdout)["rows"][0]["events"] > 0  # the events are all there
