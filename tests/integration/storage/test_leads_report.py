"""The leads report on the embedded engine (issue 12): every breakdown runs, and conversion by
temperature counts a client under the temperature they had when they paid."""

from __future__ import annotations

from datetime import timedelta

import pytest

from funnel.clock import to_millis
from funnel.events import Event
from funnel.processor import CoreConfig
from storage.backends import ChdbStore
from storage.reports import ReportScope
from storage.reports.customers import leads_report
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import T0, make_event

CONFIG = CoreConfig.default()
DAY = timedelta(days=1)
MONEY = {"revenue": "50", "currency": "EUR"}


def leads() -> list[Event]:
    """``a`` goes cold → warm → hot, pays, then cools; ``b`` asks for a demo and never pays."""
    return [
        make_event("lead", 0, person="a", customer_id="ca", manager_id="m1"),  # cold
        *(make_event("click", timedelta(hours=h), person="a") for h in (1, 2, 3)),  # warm
        make_event("order", DAY, person="a", customer_id="ca", order_id="o1", **MONEY),  # hot
        make_event("payment", 2 * DAY, person="a", customer_id="ca", order_id="o1", **MONEY),
        make_event(
            "lead", timedelta(hours=5), person="b", manager_id="m2", lead={"intent": "demo"}
        ),
    ]


@pytest.fixture
def cooled(store: ChdbStore) -> ChdbStore:
    """The leads above, with the status timer run 60 days on: both leads have cooled."""
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(leads())
    pipeline.expire(to_millis(T0 + 60 * DAY))
    pipeline.flush()
    return store


def test_a_client_counts_under_the_temperature_they_paid_at(cooled: ChdbStore) -> None:
    history = cooled.query(
        f"SELECT temperature FROM {cooled.database}.lead_changes "
        "WHERE person_id = 'ca' ORDER BY changed_at"  # a's customer id names the person
    )
    assert [r["temperature"] for r in history] == ["cold", "warm", "hot", "warm", "cold"]

    for by in (None, "temperature"):
        report = leads_report(cooled, ReportScope(by=by))  # type: ignore[arg-type]
        rows = {r["temperature"]: r for r in report.records()}
        assert set(rows) == {"hot", "cold"}, by  # a paid while hot; b is open, cold by now
        assert (rows["hot"]["leads"], rows["hot"]["clients"], rows["hot"]["conversion"]) == (
            1,
            1,
            1.0,
        )
        assert (rows["cold"]["leads"], rows["cold"]["clients"]) == (1, 0)
        assert "at conversion" in report.title
        assert "current for open leads" in report.title


@pytest.mark.parametrize("by", ["manager", "temperature", "channel", "month"])
def test_every_person_level_breakdown_runs(cooled: ChdbStore, by: str) -> None:
    report = leads_report(cooled, ReportScope(by=by))  # type: ignore[arg-type]
    assert sum(int(r["leads"]) for r in report.records()) == 2  # type: ignore[call-overload]
    if by == "manager":
        assert {(r["manager"], r["leads"], r["clients"]) for r in report.records()} == {
            ("m1", 1, 1),
            ("m2", 1, 0),
        }
