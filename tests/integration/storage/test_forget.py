"""Erasing a person (issue 18): afterwards the store answers every report exactly as a store
that never received them, their state is gone from the runner, and the erasure is recorded
without the erased data. The store is the real engine (chDB)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from funnel.events import Event
from funnel.identity import customer_key, device_key
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.forget import erase, find_subject
from storage.migrate import migrate
from storage.reports.catalog import compute, parse_request
from storage.reports.render import to_payload
from stream_processors.embedded import EmbeddedPipeline
from stream_processors.state import STATE_FILE, SavedState

CONFIG = CoreConfig.default()
REPORTS = [
    ("funnel", {}),
    ("funnel", {"from": "2026-10-01", "to": "2026-12-31", "by": "channel"}),
    ("funnel", {"steps": "impression,click,lead,order", "by": "utm_source"}),
    ("dropoff", {}),
    ("time-to-convert", {}),
    ("attribution", {}),
    ("channels", {}),
    ("channels", {"by": "day", "from": "2026-10-01", "to": "2026-11-30"}),
    ("cohorts", {}),
    ("leads", {}),
    ("paths", {"show": "assists"}),
    ("people", {"status": "converted"}),
]


AGGREGATE_ROWS = {
    "agg_stage_day": "SELECT * FROM {db}.agg_stage_day FINAL",
    "agg_stage_minute": "SELECT * FROM {db}.agg_stage_minute FINAL",
    "agg_attribution_day": "SELECT * FROM {db}.agg_attribution_day FINAL",
    "agg_events_minute": "SELECT bucket, site_id, event_type, channel, campaign, sum(events) AS n, "
    "sum(revenue) AS revenue, uniqMerge(persons) AS persons FROM {db}.agg_events_minute "
    "GROUP BY ALL",
}


def rows_of(store: ChdbStore, sql: str) -> Counter[str]:
    rows = store.query(sql.format(db=store.database))
    return Counter(json.dumps(r, default=str, sort_keys=True) for r in rows)


def subject_events(events: list[Event]) -> tuple[str, set[str]]:
    """A customer with several devices, and every event id naming them."""
    devices: dict[str, set[str]] = {}
    for event in events:
        if event.customer_id and event.anonymous_id:
            devices.setdefault(event.customer_id, set()).add(event.anonymous_id)
    payers = {e.customer_id for e in events if e.type.value == "payment"}
    customer = sorted(c for c, d in devices.items() if len(d) >= 2 and c in payers)[0]
    ids = devices[customer]
    named = {e.event_id for e in events if e.customer_id == customer or e.anonymous_id in ids}
    return customer, named


def run(store: ChdbStore, events: list[Event], saved: SavedState) -> None:
    pipeline = EmbeddedPipeline(store, CONFIG, saved=saved)
    pipeline.submit_all(events)
    pipeline.expire()
    pipeline.flush()
    pipeline.close()


def answers(store: ChdbStore) -> list[object]:
    out = []
    for name, params in REPORTS:
        result = compute(store, parse_request(name, {"site": "g", **params}), CONFIG.funnels)
        out.append(to_payload(result))
    return out


@pytest.fixture
def two_stores(
    chdb_engine: ChdbStore, tmp_path: Path
) -> tuple[ChdbStore, ChdbStore, str, SavedState]:
    sim = simulate(600, seed=21, site_id="g", multi_device=0.6)
    customer, named = subject_events(sim.events)
    stores = []
    for label in ("erased", "never"):
        store = chdb_engine.using(f"forget_{label}_{uuid.uuid4().hex[:8]}")
        migrate(store)
        stores.append(store)
    erased_state = SavedState(tmp_path / STATE_FILE.format(database="erased"), config=CONFIG)
    never_state = SavedState(tmp_path / STATE_FILE.format(database="never"), config=CONFIG)
    run(stores[0], sim.events, erased_state)
    run(stores[1], [e for e in sim.events if e.event_id not in named], never_state)
    never_state.close()
    return stores[0], stores[1], customer, erased_state


def test_after_forget_the_store_answers_as_if_the_person_never_existed(
    two_stores: tuple[ChdbStore, ChdbStore, str, SavedState],
) -> None:
    erased, never, customer, saved = two_stores
    subject = find_subject(erased, "g", customer=customer)
    assert len(subject.anonymous_ids) >= 2  # a customer and their linked devices
    erased.insert(
        "rejected_events",
        [
            {
                "received_at": datetime.now(UTC),
                "site_id": "g",
                "reason": json.dumps([{"field": "type", "reason": "x", "code": "enum"}]),
                "payload": json.dumps({"anonymous_id": sorted(subject.anonymous_ids)[0]}),
            }
        ],
    )
    before = answers(erased)
    assert before != answers(never), "the person must show in the reports to be a test"
    erasure = erase(erased, subject, requested_by="dpo@example.com", at=datetime.now(UTC))
    assert erasure.rows["events"] > 0
    assert erasure.rows["rejected_events"] == 1
    assert answers(erased) == answers(never)
    # no table still names them
    ids = sorted(subject.person_ids | subject.anonymous_ids | subject.customer_ids)
    for table in ("events", "stage_reached", "attributions", "persons", "lead_changes"):
        rows = erased.query(
            f"SELECT count() AS n FROM {erased.database}.{table} WHERE "
            + " OR ".join(f"has(array(person_id), {{i{n}:String}})" for n in range(len(ids))),
            {f"i{n}": v for n, v in enumerate(ids)},
        )
        assert int(rows[0]["n"]) == 0, table
    # the aggregates equal, bucket for bucket
    for aggregate, sql in AGGREGATE_ROWS.items():
        assert rows_of(erased, sql) == rows_of(never, sql), aggregate
    # the runner's state of them is gone; the record names no one
    assert (
        saved.forget(
            {customer_key("g", customer)} | {device_key("g", a) for a in subject.anonymous_ids}
        )
        > 0
    )
    assert saved.person(customer_key("g", customer)) is None
    (record,) = erased.query(f"SELECT * FROM {erased.database}.erasures")
    assert record["requested_by"] == "dpo@example.com"
    assert int(record["rows"]) == erasure.total
    assert not any(i in json.dumps(record, default=str) for i in ids)
    saved.close()


def test_funnel_forget_erases_through_the_command(tmp_path: Path) -> None:
    funnel = str(Path(sys.executable).with_name("funnel"))
    store = f"chdb://{tmp_path / 'store'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [funnel, *args], capture_output=True, text=True, timeout=180, check=False
        )

    assert cli("demo", "--persons", "300", "--store", store).returncode == 0
    people = json.loads(
        cli(
            "report", "people", "--status", "converted", "--store", store, "--format", "json"
        ).stdout
    )
    customer = next(r["customer_id"] for r in people["rows"] if r["customer_id"])
    done = cli("forget", "--customer", customer, "--requested-by", "dpo", "--store", store)
    assert done.returncode == 0, done.stderr
    assert "recorded in erasures" in done.stderr
    after = json.loads(
        cli(
            "report", "people", "--status", "converted", "--store", store, "--format", "json"
        ).stdout
    )
    assert customer not in {r["customer_id"] for r in after["rows"]}
    assert len(after["rows"]) == len(people["rows"]) - 1
    again = cli("forget", "--customer", customer, "--store", store)
    assert again.returncode == 1
    assert "no events of customer" in again.stderr
