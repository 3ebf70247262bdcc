"""What the commands print (issue 12): ``funnel sites``, one number format across table, CSV
and JSON, and ``simulate --to inprocess`` recording what it refused.

One store for the module, made as a user makes it: ``funnel demo`` (site ``shop``) and
``funnel simulate --to inprocess --messy --bots`` (site ``crawled``), both subprocesses.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.funnel_serve import funnel_serve

BOTS = 25


def funnel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funnel.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "250"},  # tables as wide as they are, not cut to a tty
    )


def ok(*args: str) -> str:
    result = funnel(*args)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


@dataclass(frozen=True)
class Made:
    directory: Path
    demo_events: int
    rejected: int

    @property
    def store(self) -> str:
        return f"chdb://{self.directory}"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    directory = tmp_path_factory.mktemp("outputs") / "store"
    store = f"chdb://{directory}"
    demo = funnel("demo", "--persons", "400", "--site", "shop", "--store", store)
    assert demo.returncode == 0, demo.stderr
    [events] = re.findall(r"([\d,]+) events from 400 people", demo.stderr)
    sent = funnel(
        "simulate",
        "--to",
        "inprocess",
        "--messy",
        "--bots",
        str(BOTS),
        "--persons",
        "200",
        "--site",
        "crawled",
        "--store",
        store,
    )
    assert sent.returncode == 0, sent.stderr
    [rejected] = re.findall(r"([\d,]+) rejected", sent.stderr)
    return Made(directory, int(events.replace(",", "")), int(rejected.replace(",", "")))


def stored(made: Made, sql: str) -> list[list[object]]:
    """Rows of ``sql`` over the module's store, from a process of its own (chDB opens one
    store directory per process; this test process has the session's)."""
    script = (
        "import json, sys; from storage.backends import open_store; "
        f"s = open_store({made.store!r}, create=False); "
        "print(json.dumps([list(r.values()) for r in s.query(sys.argv[1])], default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, sql], capture_output=True, text=True, check=True
    )
    rows: list[list[object]] = json.loads(result.stdout)
    return rows


def test_simulate_inprocess_records_what_it_refused(made: Made) -> None:
    assert made.rejected > 0  # --messy sends malformed items
    [[count, reasons]] = stored(
        made,
        "SELECT count(), countIf(reason LIKE '[{%') FROM funnel.rejected_events "
        "WHERE site_id = 'crawled'",
    )
    assert int(str(count)) == made.rejected
    assert int(str(reasons)) == made.rejected  # each with its machine-readable reasons


def test_sites_lists_each_site_of_the_store(made: Made) -> None:
    payload = json.loads(ok("sites", "--store", made.store, "--format", "json"))
    assert payload["columns"] == [
        "site",
        "funnels",
        "first_event",
        "last_event",
        "events",
        "bot_events",
    ]
    sites = {row["site"]: row for row in payload["rows"]}
    assert list(sites) == ["crawled", "shop"]
    shop, crawled = sites["shop"], sites["crawled"]
    assert shop["funnels"].split(", ")[0] == "sales"
    assert shop["events"] == made.demo_events
    assert shop["bot_events"] == 0
    assert crawled["bot_events"] >= BOTS  # the crawlers' page views, flagged
    assert crawled["events"] > crawled["bot_events"]
    for row in sites.values():
        assert datetime.fromisoformat(row["first_event"]) <= datetime.fromisoformat(
            row["last_event"]
        )
    text = ok("sites", "--store", made.store, "--format", "csv")
    as_csv = list(csv.DictReader(io.StringIO(text)))
    assert as_csv == [{k: str(v) for k, v in row.items()} for row in payload["rows"]]
    table = ok("sites", "--store", made.store)
    for shown in ("shop", "crawled", f"{made.demo_events:,}"):
        assert shown in table


def test_sites_and_refusals_come_from_the_owner_while_it_runs(made: Made, tmp_path: Path) -> None:
    direct = ok("sites", "--store", made.store, "--format", "json")
    with funnel_serve(made.directory, "key:shop", tmp_path / "serve.log") as served:
        assert ok("sites", "--store", made.store, "--format", "json") == direct
        assert served.get_text("/api/reports/sites") == direct
        as_csv = ok("sites", "--store", made.store, "--format", "csv")
        assert served.get_text("/api/reports/sites?format=csv") == as_csv
        unknown = funnel("report", "leads", "--site", "nope", "--store", made.store)
        assert unknown.returncode == 2, unknown.stderr
        assert "no data for site 'nope' (sites: crawled, shop)" in unknown.stderr


def test_one_number_format_in_csv_json_and_table(made: Made) -> None:
    """The channels report: the same numbers in CSV and JSON, in their column's format."""
    args = ("report", "channels", "--model", "linear", "--site", "shop", "--store", made.store)
    payload = json.loads(ok(*args, "--format", "json"))
    rows = list(csv.DictReader(io.StringIO(ok(*args, "--format", "csv"))))
    assert len(rows) == len(payload["rows"]) > 1
    formats = {
        "impressions": r"\d+",  # counts: integers
        "clicks": r"\d+",
        "leads": r"\d+\.\d{4}",  # credited conversions: 4 decimals
        "payments": r"\d+\.\d{4}",
        "revenue": r"\d+\.\d{2}",  # money: 2 decimals
        "spend": r"\d+\.\d{2}",
        "aov": r"(\d+\.\d{2})?",  # none without payments
    }
    for text_row, record in zip(rows, payload["rows"], strict=True):
        for column, text in text_row.items():
            value = record[column]
            if value is None:
                assert text == ""
            elif isinstance(value, str):
                assert text == value
            else:
                assert float(text) == value, (column, text, value)
        for column, pattern in formats.items():
            assert re.fullmatch(pattern, text_row[column]), (column, text_row[column])
        assert isinstance(record["impressions"], int)
    table = ok(*args)
    first = payload["rows"][0]
    assert f"{first['revenue']:,.2f}" in table
    assert f"{first['impressions']:,}" in table


def test_rates_are_fractions_in_csv_and_json_and_percentages_in_the_table(made: Made) -> None:
    args = ("report", "dropoff", "--site", "shop", "--store", made.store)
    payload = json.loads(ok(*args, "--format", "json"))
    rows = list(csv.DictReader(io.StringIO(ok(*args, "--format", "csv"))))
    rates = [r["dropoff_rate"] for r in payload["rows"]]
    assert [float(r["dropoff_rate"]) for r in rows] == rates
    assert all(re.fullmatch(r"[01]\.\d{4}", r["dropoff_rate"]) for r in rows)
    assert [r["biggest_leak"] for r in rows].count("true") == 1
    table = ok(*args)
    assert f"{rates[0] * 100:.1f}%" in table
