"""Retention (issue 18): each table's TTL as configured, rows past it deleted by the engine,
and the defaults (dead letters 30 days, everything else kept)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.backends import ChdbStore
from storage.retention import RETENTION_TABLES, Retention, apply_retention


def ttls(store: ChdbStore) -> dict[str, str]:
    """Table → its TTL clause as the engine states it ('' without one)."""
    rows = store.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        {"db": store.database},
    )
    out = {}
    for row in rows:
        engine = str(row["engine_full"])
        out[str(row["name"])] = (
            engine[engine.find("TTL") :].split(" SETTINGS")[0] if "TTL" in engine else ""
        )
    return out


def test_migrations_keep_dead_letters_30_days_and_everything_else(store: ChdbStore) -> None:
    current = ttls(store)
    assert "toIntervalDay(30)" in current["rejected_events"]
    for table in ("events", "stage_reached", "attributions", "lead_changes", "persons"):
        assert current[table] == "", table


def test_configured_retention_is_set_and_set_back(store: ChdbStore) -> None:
    apply_retention(store, Retention(events=400, facts=365, rejected=7))
    current = ttls(store)
    assert "occurred_at" in current["events"]
    assert "toIntervalDay(400)" in current["events"]
    for table, column in RETENTION_TABLES["facts"]:
        assert column in current[table], table
        assert "toIntervalDay(365)" in current[table], table
    assert "toIntervalDay(7)" in current["rejected_events"]
    apply_retention(store, Retention())  # the defaults again
    current = ttls(store)
    assert current["events"] == ""
    assert current["persons"] == ""
    assert "toIntervalDay(30)" in current["rejected_events"]
    assert apply_retention(store, Retention()) == [  # idempotent: no REMOVE of what is gone
        f"ALTER TABLE {store.database}.rejected_events MODIFY TTL "
        "toDateTime(recorded_at) + INTERVAL 30 DAY"
    ]


def test_rows_past_their_retention_are_deleted(store: ChdbStore) -> None:
    now = datetime.now(UTC)
    store.insert(
        "rejected_events",
        [
            {
                "received_at": now,
                "recorded_at": now - timedelta(days=40),
                "site_id": "s",
                "reason": "old",
                "payload": "{}",
            },
            {
                "received_at": now - timedelta(days=400),
                "recorded_at": now - timedelta(days=10),
                "site_id": "s",
                "reason": "new",
                "payload": "{}",
            },
        ],
    )
    store.execute(f"OPTIMIZE TABLE {store.database}.rejected_events FINAL")
    rows = store.query(f"SELECT reason FROM {store.database}.rejected_events")
    assert [r["reason"] for r in rows] == ["new"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"events": "ninety"}, "events retention is a number of days"),
        ({"facts": "-1"}, "facts retention is a number of days"),
        ({"rejected": "40000"}, "rejected retention is a number of days"),
        ({"logs": "30"}, "unknown retention 'logs'"),
    ],
)
def test_bad_retention_is_refused_naming_the_setting(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retention.parse(values)


def test_forever_and_the_environment() -> None:
    assert Retention.parse({"events": "forever", "facts": "0", "rejected": " 14 "}) == Retention(
        events=None, facts=None, rejected=14
    )
    env = {"FUNNEL_RETENTION_EVENTS_DAYS": "730"}
    assert Retention.from_env(env) == Retention(events=730)
    with pytest.raises(ValueError, match="FUNNEL_RETENTION_EVENTS_DAYS"):
        Retention.from_env({"FUNNEL_RETENTION_FACTS_DAYS": "soon"})


def test_funnel_migrate_sets_retention_and_refuses_a_bad_one(tmp_path: Path) -> None:
    funnel = str(Path(sys.executable).with_name("funnel"))
    store = f"chdb://{tmp_path / 'store'}"
    ok = subprocess.run(
        [funnel, "migrate", "--store", store, "--keep-events", "730"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "FUNNEL_RETENTION_REJECTED_DAYS": "14"},
    )
    assert ok.returncode == 0, ok.stderr
    assert "retention: events 730 days, facts forever, rejected 14 days" in ok.stderr
    bad = subprocess.run(
        [funnel, "migrate", "--store", store, "--keep-facts", "soon"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "facts retention is a number of days" in bad.stderr
