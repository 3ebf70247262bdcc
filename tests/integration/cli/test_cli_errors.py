"""Mistakes on the command line and the report API (issue 12): a usage error, never a silent
wrong answer, and one line, never a traceback.

``funnel`` runs as a user runs it (a subprocess, on a real embedded store). A refusal exits
with code 2 and ends in one ``Error: …`` line that says what is wrong and what would be
right; a request a report cannot answer is refused before it is answered with zeros.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from funnel.processor import CoreConfig
from producers.collector import CollectorSettings, EmbeddedDelivery, create_app
from storage.backends import ChdbStore
from storage.gate import CommitGate
from storage.reports.api import LiveReports
from stream_processors.embedded import GatedPipeline
from tests.servers import READ_KEYS, read_client

SITE = "shop"


def funnel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funnel.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *says: str) -> str:
    """The error line of a refusal: exit code 2, no traceback, one ``Error:`` line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    for words in says:
        assert words in line, (words, line)
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = f"chdb://{tmp_path_factory.mktemp('cli') / 'store'}"
    made = funnel("demo", "--persons", "300", "--site", SITE, "--store", store, "--format", "json")
    assert made.returncode == 0, made.stderr
    return store


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["channels", "--model", "markov"], ["--model", "data-driven", "report attribution"]),
        (["channels", "--model", "bogus"], ["unknown model 'bogus'", "last_non_direct, linear"]),
        (["attribution", "--conversion", "purchase"], ["'lead', 'order', 'payment', 'repeat'"]),
        (["attribution", "--lookback-days", "-5"], ["--lookback-days", "from 1 to 3650"]),
        (["forecast", "--by", "channel"], ["No such option: --by"]),
        (["forecast", "--from", "2026-10-01"], ["No such option: --from"]),
        (["channels", "--by", "temperature"], ["breaks down by channel, campaign, day, week"]),
        (["cohorts", "--by", "manager"], ["'day', 'week', 'month'"]),
        (["leads", "--site", "nope"], ["--site", f"no data for site 'nope' (sites: {SITE})"]),
        (["funnel", "--site", "nope"], [f"no data for site 'nope' (sites: {SITE})"]),
    ],
)
def test_a_request_a_report_cannot_answer_is_a_usage_error(
    demo_store: str, args: list[str], says: list[str]
) -> None:
    refused(funnel("report", *args, "--store", demo_store), *says)


REPORTS_OVER_EVENTS = [
    ["funnel"],
    ["dropoff"],
    ["time-to-convert"],
    ["attribution"],
    ["channels"],
    ["cohorts"],
    ["leads"],
    ["forecast"],
]


@pytest.mark.parametrize("args", REPORTS_OVER_EVENTS)
def test_every_report_takes_include_bots(demo_store: str, args: list[str]) -> None:
    result = funnel("report", *args, "--include-bots", "--site", SITE, "--store", demo_store)
    assert result.returncode == 0, result.stderr


def test_a_report_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    refused(funnel("report", "leads", "--store", f"chdb://{missing}"), "no store at", "nothing")
    refused(funnel("sites", "--store", str(missing)), "no store at")
    assert not missing.exists()
    bare = subprocess.run(  # the default store, ./.funnel, is not made either
        [sys.executable, "-m", "funnel.cli", "report", "funnel"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "FUNNEL_STORE"},
        timeout=120,
        check=False,
    )
    refused(bare, "no store at", ".funnel")
    assert not (tmp_path / ".funnel").exists()


def test_a_store_of_another_database_names_the_ones_it_has(demo_store: str) -> None:
    refused(
        funnel("report", "leads", "--store", demo_store, "--database", "other"),
        "has no database 'other' (it has funnel)",
    )


def test_store_urls_that_cannot_be_opened(tmp_path: Path) -> None:
    refused(funnel("report", "leads", "--store", "bogus://x"), "--store", "unknown store URL")
    refused(funnel("migrate", "--store", "bogus://x"), "unknown store URL")
    down = f"clickhouse://127.0.0.1:{free_port()}/funnel"
    refused(funnel("report", "leads", "--store", down), "store unavailable", "Connection refused")


def test_a_store_another_process_holds(tmp_path: Path) -> None:
    store = tmp_path / "held"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from storage.backends import open_store; "
            f"s = open_store('chdb://{store}'); print('open', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == "open\n"
            says = ["store unavailable", "open in another process", f"(pid {holder.pid})"]
            refused(funnel("report", "leads", "--store", f"chdb://{store}"), *says)
            refused(funnel("demo", "--persons", "10", "--store", f"chdb://{store}"), *says)
        finally:
            holder.stdin.close()  # the holder exits when its stdin ends
            holder.wait(timeout=60)


def test_configuration_files_that_cannot_be_used(tmp_path: Path, demo_store: str) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[funnel]\nname = 1\n")
    invalid = tmp_path / "invalid.toml"
    invalid.write_text('[[funnel]]\nname = "x"\n')
    refused(
        funnel("report", "funnel", "--funnels", str(broken), "--store", demo_store),
        "--funnels",
        "broken.toml: not valid TOML",
    )
    refused(
        funnel("report", "funnel", "--funnels", str(invalid), "--store", demo_store),
        "--funnels",
        "invalid.toml: invalid: funnel.0.steps: Field required",
    )
    store = f"chdb://{tmp_path / 'demo'}"
    refused(
        funnel("demo", "--channels", str(broken), "--store", store), "--channels", "not valid TOML"
    )
    refused(
        funnel("demo", "--funnel", "nope", "--store", store),
        "--funnel",
        "unknown funnel 'nope' (configured: sales",
    )
    assert not (tmp_path / "demo").exists()  # refused before the store is opened


def test_simulate_without_a_broker_fails_within_seconds() -> None:
    started = time.monotonic()
    result = funnel("simulate", "--kafka", f"127.0.0.1:{free_port()}", "--persons", "5")
    refused(result, "no Kafka broker answered at 127.0.0.1:", "funnel dev kafka")
    assert time.monotonic() - started < 15
    assert "ERROR" not in result.stderr  # the client's own bootstrap log is not shown


@pytest.fixture
def api(store: ChdbStore) -> Iterator[TestClient]:
    """The report API of ``funnel serve`` on an empty store (no sites yet)."""
    config = CoreConfig.default()
    gate = CommitGate()
    delivery = EmbeddedDelivery(GatedPipeline(store, config, gate))
    live = LiveReports(store, config.funnels, gate)
    settings = CollectorSettings(write_keys={"key": SITE}, read_keys=READ_KEYS)  # type: ignore[dict-item]
    with read_client(create_app(settings, delivery, live=live)) as client:
        yield client


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("channels?model=markov", "report attribution"),
        ("channels?by=manager", "breaks down by channel, campaign, day, week, month"),
        ("attribution?conversion=purchase", "one of lead, order, payment, repeat"),
        ("forecast?by=channel", "the forecast report takes no by"),
        ("cohorts?by=temperature", "breaks down by day, week, month"),
        ("leads?include_bots=maybe", "include_bots is true or false"),
        ("leads?site=nope", "no data for site 'nope' (sites: none yet)"),
    ],
)
def test_the_report_api_refuses_the_same_with_a_json_error(
    api: TestClient, query: str, says: str
) -> None:
    response = api.get(f"/api/reports/{query}", headers={"host": "localhost"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_report_request"
    assert says in body["message"]


def test_the_report_api_takes_include_bots(api: TestClient) -> None:
    response = api.get("/api/reports/funnel?include_bots=true", headers={"host": "localhost"})
    assert response.status_code == 200, response.text


def test_lead_rules_from_a_file_and_a_bad_one_refused(tmp_path: Path) -> None:
    bad = tmp_path / "leads.toml"
    bad.write_text("rule = [", "utf-8")
    refused(funnel("--leads", str(bad), "demo", "--persons", "10"), "--leads", str(bad))
    env = {**os.environ, "FUNNEL_LEADS": str(bad)}
    through_env = subprocess.run(
        [sys.executable, "-m", "funnel.cli", "demo", "--persons", "10"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    refused(through_env, str(bad))
