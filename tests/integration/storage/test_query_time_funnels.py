"""Funnels asked at query time (issue 17): the same answer as the stream for every shipped
funnel, on clean and on messy traffic, and hand-computed cases for each filter, breakdown,
exclusion and page step. The store is the real engine (chDB)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from funnel.events import Event, EventType
from funnel.funnels import FunnelSpec
from funnel.intake import take_batch
from funnel.processor import CoreConfig
from producers.messiness import Mess, arrivals
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.migrate import migrate
from storage.reports import ReportScope, dropoff_report, funnel_report, step_counts
from storage.reports.query import FunnelQuery, parse_conditions, parse_steps
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import make_event

CONFIG = CoreConfig.default()
SHIPPED = CONFIG.funnels.specs
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def run(store: ChdbStore, events: list[Event]) -> None:
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(events)
    pipeline.flush()


def written_out(spec: FunnelSpec) -> FunnelQuery:
    """A shipped funnel as an analyst would type it: ``--steps``, ``--window``, ``--mode``."""
    steps = ",".join(
        step.type.value
        + ("[" + ",".join(f"{k}={v}" for k, v in step.where.items()) + "]" if step.where else "")
        for step in spec.steps
    )
    query = parse_steps(steps, window=f"{spec.window_ms}ms", mode=spec.mode.value)
    assert not query.configured  # answered from the events, never from the stream's facts
    return query


def counts(store: ChdbStore, funnel: FunnelSpec | FunnelQuery, **scope: object) -> list[int]:
    reports = funnel_report(store, funnel, ReportScope(**scope), split=False)  # type: ignore[arg-type]
    assert len(reports) == 1
    return [step.count for step in reports[0].steps]


@pytest.fixture(scope="module")
def clean(chdb_engine: ChdbStore) -> ChdbStore:
    """The demo's traffic (smaller): cross-device customers whose merges correct facts."""
    engine = chdb_engine.using(f"qt_clean_{uuid.uuid4().hex[:8]}")
    migrate(engine)
    run(engine, simulate(1500, seed=5, site_id="q", multi_device=0.5).events)
    return engine


@pytest.fixture(scope="module")
def messy(chdb_engine: ChdbStore) -> ChdbStore:
    """The same kind of traffic as the collector receives it: retries, reordering, skewed
    clocks, late devices and malformed payloads, through intake into the runner."""
    engine = chdb_engine.using(f"qt_messy_{uuid.uuid4().hex[:8]}")
    migrate(engine)
    sim = simulate(1500, seed=9, site_id="q", multi_device=0.4)
    mess = Mess(duplicates=0.05, reorder_seconds=30, skewed_devices=0.1, late=0.03, malformed=0.01)
    pipeline = EmbeddedPipeline(engine, CONFIG)
    accepted = duplicates = 0
    for arrival in arrivals(sim.events, mess, seed=9):
        result = take_batch(
            [arrival.payload],
            site_id="q",
            received_at=arrival.arrives_at,
            user_agent=arrival.user_agent,
        )
        pipeline.submit_all(result.accepted)
        accepted += len(result.accepted)
        duplicates += arrival.kind == "duplicate"
    pipeline.flush()
    assert accepted > 3000
    assert duplicates > 50, "the traffic must be messy to be a test"
    return engine


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda s: s.name)
@pytest.mark.parametrize("data", ["clean", "messy"])
def test_a_shipped_funnel_asked_at_query_time_equals_the_streamed_answer(
    data: str, spec: FunnelSpec, request: pytest.FixtureRequest
) -> None:
    store: ChdbStore = request.getfixturevalue(data)
    streamed = step_counts(store, spec, ReportScope(site="q"), source="raw")[""]
    assert streamed.get(2, 0) > 0, "the funnel must have people past step 1 to be a test"
    asked = counts(store, written_out(spec), site="q")
    assert asked == [streamed.get(i, 0) for i in range(1, len(spec.steps) + 1)]


def test_the_report_api_takes_a_written_out_funnel_as_the_configured_one(clean: ChdbStore) -> None:
    from storage.reports.catalog import compute, parse_request

    request = parse_request(
        "funnel", {"steps": "impression,click,lead,order", "site": "q", "split": "false"}
    )
    (asked,) = compute(clean, request, CONFIG.funnels)  # type: ignore[misc]
    (configured,) = funnel_report(clean, CONFIG.funnels.get("aida"), ReportScope(site="q"))
    assert [s.count for s in asked.steps] == [s.count for s in configured.steps]
    assert asked.funnel == "impression → click → lead → order"


# Hand-computed cases: each person's events and what they must count as.


def touch(kind: EventType, at: timedelta, person: str, **context: str) -> Event:
    return make_event(kind, at, person=person, site="h", context=context)


def google(kind: EventType, at: timedelta, person: str, **context: str) -> Event:
    return touch(
        kind, at, person, utm_source="google", utm_medium="cpc", utm_campaign="brand", **context
    )


IMPRESSION, CLICK, LEAD, ORDER = (
    EventType.IMPRESSION,
    EventType.CLICK,
    EventType.LEAD,
    EventType.ORDER,
)
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def hand(store: ChdbStore) -> ChdbStore:
    """Four people, each with a known path:

    * ``a``: google ad on a phone, /pricing page, then a click and a lead (intent purchase,
      customer ``cust-a``, manager ``m-7``) within 2 hours;
    * ``b``: a facebook ad on a desktop, /blog, a click after 3 days, then an order;
    * ``c``: google on a desktop, /pricing, a click, then a ``refund`` event (property);
    * ``d``: organic search (referrer google.com) on a phone, no further step.
    """
    events = [
        google(IMPRESSION, timedelta(0), "a", url="https://shop.example/pricing?x=1"),
        google(CLICK, HOUR, "a", url="https://shop.example/pricing"),
        make_event(
            LEAD,
            2 * HOUR,
            person="a",
            site="h",
            customer_id="cust-a",
            manager_id="m-7",
            lead={"intent": "purchase", "form": "demo"},
            properties={"plan": "pro"},
        ),
        touch(
            IMPRESSION,
            timedelta(0),
            "b",
            utm_source="facebook",
            utm_medium="paid_social",
            url="https://shop.example/blog/1",
        ),
        touch(CLICK, 3 * DAY, "b", url="https://shop.example/blog/2"),
        make_event(ORDER, 3 * DAY + HOUR, person="b", site="h", order_id="o-b"),
        google(IMPRESSION, timedelta(0), "c", url="https://shop.example/pricing"),
        google(CLICK, HOUR, "c", url="https://shop.example/pricing"),
        make_event(
            LEAD, 5 * HOUR, person="c", site="h", properties={"refund": "yes", "plan": "basic"}
        ),
        touch(
            IMPRESSION,
            timedelta(0),
            "d",
            referrer="https://www.google.com/search?q=shop",
            url="https://shop.example/",
        ),
    ]
    agents = {"a": PHONE, "b": DESKTOP, "c": DESKTOP, "d": PHONE}
    pipeline = EmbeddedPipeline(store, CONFIG)
    for event in events:
        payload = json.loads(event.model_dump_json(exclude_none=True))
        person = event.anonymous_id or ""
        result = take_batch(
            [payload], site_id="h", received_at=event.occurred_at, user_agent=agents[person]
        )
        assert result.accepted, result
        pipeline.submit_all(result.accepted)
    pipeline.flush()
    return store


def ask(
    store: ChdbStore, steps: str, *, by: str | None = None, where: str = "", **options: str
) -> dict[str, list[int]]:
    query = parse_steps(steps, **options)  # type: ignore[arg-type]
    query = query.adjusted(where=parse_conditions(where) if where else ())
    reports = funnel_report(store, query, ReportScope(site="h", by=by), split=False)
    return {r.group or "": [s.count for s in r.steps] for r in reports}


def test_steps_window_and_mode(hand: ChdbStore) -> None:
    assert ask(hand, "impression,click,lead") == {"": [4, 3, 2]}
    assert ask(hand, "impression,click,order") == {"": [4, 3, 1]}
    # b's click came 3 days after the impression: out of a 1-day window
    assert ask(hand, "impression,click,order", window="1d") == {"": [4, 2, 0]}
    # a's lead came 2 h after the impression, c's 5 h
    assert ask(hand, "impression,lead", window="3h") == {"": [4, 1]}
    # any order: b's order counts without the click (the window opened at the impression)
    assert ask(hand, "impression,order", mode="any") == {"": [4, 1]}
    # strict: nothing else between the steps
    assert ask(hand, "impression,lead", mode="strict") == {"": [4, 0]}


def test_step_conditions_and_page_steps(hand: ChdbStore) -> None:
    assert ask(hand, "impression,lead[intent=purchase]") == {"": [4, 1]}  # the lead's own field
    assert ask(hand, "impression,lead[form=demo]") == {"": [4, 1]}
    assert ask(hand, "impression,lead[plan=basic]") == {"": [4, 1]}  # a property
    assert ask(hand, "impression,lead[plan^=b]") == {"": [4, 1]}
    assert ask(hand, "impression,lead[plan!=basic]") == {"": [4, 1]}
    assert ask(hand, "/pricing,click") == {"": [2, 2]}  # a and c saw a /pricing page
    assert ask(hand, "impression,/blog") == {"": [4, 1]}


def test_an_any_order_funnel_times_exclusions_from_whichever_step_opened_it(
    hand: ChdbStore,
) -> None:
    # c's window opens at its click (step 2); the refund comes 4 hours later
    assert ask(hand, "order,click,!lead[refund=yes]", mode="any") == {"": [2, 1]}


def test_not_equal_on_intent_looks_at_the_leads_own_field_too(hand: ChdbStore) -> None:
    assert ask(hand, "impression,lead[intent!=purchase]") == {"": [4, 1]}  # c's, not a's


def test_exclusions_leave_out_who_did_them_within_the_window(hand: ChdbStore) -> None:
    assert ask(hand, "impression,click,lead,!lead[refund=yes]") == {"": [3, 2, 1]}
    # c's refund came 5 h after entering: outside a 2 h window, so c stays
    assert ask(hand, "impression,click,!lead[refund=yes]", window="2h") == {"": [4, 2]}


def test_where_filters_the_entry_event(hand: ChdbStore) -> None:
    assert ask(hand, "impression,click,lead", where="utm_source=google") == {"": [2, 2, 2]}
    assert ask(hand, "impression,click", where="utm_source!=google") == {"": [2, 1]}
    assert ask(hand, "impression,click", where="device=iPhone") == {"": [2, 1]}
    assert ask(hand, "impression,click", where="landing_page=/pricing,os=Windows") == {"": [1, 1]}
    assert ask(hand, "impression,click", where="referrer_host*=google") == {"": [1, 0]}
    assert ask(hand, "impression,click", where="utm_medium=cpc,utm_source=facebook") == {"": [0, 0]}


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("utm_source", {"google": [2, 2, 2], "facebook": [1, 1, 0], "google.com": [1, 0, 0]}),
        ("utm_medium", {"cpc": [2, 2, 2], "paid_social": [1, 1, 0], "organic": [1, 0, 0]}),
        ("utm_campaign", {"brand": [2, 2, 2], "(none)": [2, 1, 0]}),
        ("landing_page", {"/pricing": [2, 2, 2], "/blog/1": [1, 1, 0], "/": [1, 0, 0]}),
        ("referrer_host", {"(none)": [3, 3, 2], "google.com": [1, 0, 0]}),
        ("device", {"(none)": [2, 2, 1], "iPhone": [2, 1, 1]}),
        ("browser", {"Chrome": [2, 2, 1], "Mobile Safari": [2, 1, 1]}),
        ("os", {"Windows": [2, 2, 1], "iOS": [2, 1, 1]}),
        (
            "channel",
            {"Paid Search": [2, 2, 2], "Paid Social": [1, 1, 0], "Organic Search": [1, 0, 0]},
        ),
    ],
)
def test_breakdowns_by_a_field_of_the_entry_touch(
    hand: ChdbStore, by: str, expected: dict[str, list[int]]
) -> None:
    assert ask(hand, "impression,click,lead", by=by) == expected


def test_breakdown_by_a_property_of_the_entry_event(hand: ChdbStore) -> None:
    # the property is on the lead, so entering through it: a lead → order funnel
    assert ask(hand, "lead,order", by="property:plan") == {"pro": [1, 0], "basic": [1, 0]}


def test_a_query_time_funnel_splits_dropped_from_still_in_window(store: ChdbStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    run(
        store,
        [
            make_event(IMPRESSION, now - timedelta(days=40), person="old", site="w"),
            make_event(IMPRESSION, now - HOUR, person="new", site="w"),
            make_event(IMPRESSION, now - 2 * HOUR, person="done", site="w"),
            make_event(CLICK, now - HOUR, person="done", site="w"),
        ],
    )
    (report,) = funnel_report(
        store, parse_steps("impression,click", window="7d"), ReportScope(site="w")
    )
    step1 = report.steps[0]
    assert (step1.count, step1.stopped_in_window, step1.stopped_dropped) == (3, 1, 1)
    (row,) = dropoff_report(
        store, parse_steps("impression,click", window="7d"), ReportScope(site="w")
    )
    assert (row.reached, row.continued, row.dropped, row.in_window) == (3, 1, 1, 1)


def funnel_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("funnel")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_commands_answer_query_time_funnels(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    assert funnel_cli("demo", "--persons", "300", "--store", store).returncode == 0

    def report(*args: str) -> list[dict[str, object]]:
        out = funnel_cli("report", *args, "--store", store, "--format", "json")
        assert out.returncode == 0, out.stderr
        payload = json.loads(out.stdout)
        return payload if isinstance(payload, list) else [payload]

    def steps(payload: dict[str, object]) -> list[int]:
        return [int(s["count"]) for s in payload["steps"]]  # type: ignore[attr-defined]

    (configured,) = report("funnel", "--funnel", "aida")
    (asked,) = report("funnel", "--steps", "impression,click,lead,order")
    assert steps(asked) == steps(configured)
    assert steps(asked)[1] > 0
    by_source = {
        r["group"]: steps(r)
        for r in report("funnel", "--steps", "impression,click", "--by", "utm_source")
    }
    (google_only,) = report("funnel", "--steps", "impression,click", "--where", "utm_source=google")
    assert steps(google_only) == by_source["google"]
    # a person counts once under each source they entered through
    assert sum(s[0] for s in by_source.values()) >= steps(asked)[0] > by_source["google"][0]
    rows = report("dropoff", "--steps", "impression,click,lead", "--window", "7d")
    assert [r["step"] for r in rows[0]["rows"]] == ["impression", "click"]  # type: ignore[index]
    bad = funnel_cli("report", "funnel", "--store", store, "--steps", "impression,clack")
    assert bad.returncode == 2
    assert "--steps" in bad.stderr
    assert "unknown event type 'clack'" in bad.stderr
    both = funnel_cli(
        "report", "funnel", "--store", store, "--funnel", "aida", "--steps", "lead,order"
    )
    assert both.returncode == 2
    assert "not both" in both.stderr


def people(store: ChdbStore, **options: object) -> list[dict[str, object]]:
    from storage.reports.people import people_report

    funnel = parse_steps(str(options.pop("steps", "impression,click,lead")))
    return people_report(store, funnel, ReportScope(site="h"), **options).records()  # type: ignore[arg-type]


def test_the_people_behind_each_number_checked_against_the_events(hand: ChdbStore) -> None:
    everyone = people(hand)
    assert len(everyone) == 4
    by_customer = {p["customer_id"]: p for p in everyone}
    a = by_customer["cust-a"]
    assert (a["step"], a["status"], a["first_channel"]) == ("lead", "converted", "Paid Search")
    assert (a["last_event"], a["manager"]) == ("lead", "m-7")
    assert a["last_event_at"].startswith("2026-10-01 02:00:00")  # type: ignore[union-attr]
    ids = {p["person_id"]: p for p in everyone if p["customer_id"] == ""}
    assert {k: (v["step"], v["status"]) for k, v in ids.items()} == {
        "b": ("click", "dropped"),  # reached the click; the lead never came, windows long shut
        "c": ("lead", "converted"),
        "d": ("impression", "dropped"),
    }
    assert ids["b"]["last_event"] == "order"
    assert ids["d"]["first_channel"] == "Organic Search"
    # the report's numbers, person by person
    assert {p["person_id"] for p in people(hand, step=2)} == {a["person_id"], "b", "c"}
    assert [p["person_id"] for p in people(hand, step=2, status="dropped")] == ["b"]
    assert [p["person_id"] for p in people(hand, step=1, status="dropped")] == ["d"]
    assert people(hand, step=2, status="in_window") == []
    assert {p["person_id"] for p in people(hand, status="converted")} == {a["person_id"], "c"}
    assert [
        p["person_id"]
        for p in people(hand, steps="impression,click,lead,!lead[refund=yes]", status="converted")
    ] == [a["person_id"]]
    # newest last event first, and the limit says when it cut
    from storage.reports.people import people_report

    table = people_report(hand, parse_steps("impression,click"), ReportScope(site="h"), limit=2)
    assert len(table.rows) == 2
    assert table.meta["truncated"] is True
    assert table.records()[0]["person_id"] == "b"  # its order, 3 days in, is the newest event


@pytest.mark.parametrize("spec", SHIPPED[:2], ids=lambda s: s.name)
def test_people_lists_add_up_to_the_funnel_report(clean: ChdbStore, spec: FunnelSpec) -> None:
    from storage.reports.people import people_report

    scope = ReportScope(site="q")
    (report,) = funnel_report(clean, spec, scope)
    for row in report.steps:
        listed = people_report(clean, spec, scope, step=row.index).records()
        assert len(listed) == row.count
        if row.index < len(report.steps):
            for status, expected in (
                ("dropped", row.stopped_dropped),
                ("in_window", row.stopped_in_window),
            ):
                assert (
                    len(people_report(clean, spec, scope, step=row.index, status=status).rows)
                    == expected
                )
    converted = people_report(clean, spec, scope, status="converted").rows
    assert len(converted) == report.converted > 0
    hot = people_report(clean, spec, scope, temperature="hot").records()
    assert hot
    assert {p["temperature"] for p in hot} == {"hot"}


def test_time_to_convert_by_a_touch_field_and_filtered_on_the_entry(hand: ChdbStore) -> None:
    from storage.reports.timing import time_to_convert_report

    sales = CONFIG.funnels.get("sales")

    def between(by: str | None = None, where: str = "") -> dict[tuple[str, str], tuple[int, float]]:
        table = time_to_convert_report(
            hand,
            sales,
            ReportScope(site="h", by=by),
            where=parse_conditions(where) if where else (),
        )
        return {
            (str(r.get("group", "")), str(r["between"])): (
                int(r["persons"]),
                float(r["mean_hours"]),
            )  # type: ignore[arg-type]
            for r in table.records()
        }

    # impression → click: a and c after 1 hour, b after 3 days; click → lead: a 1 h, c 4 h
    assert between("utm_source") == {
        ("google", "impression → click"): (2, 1.0),
        ("google", "click → lead"): (2, 2.5),
        ("facebook", "impression → click"): (1, 72.0),
    }
    assert between(where="utm_source=facebook") == {("", "impression → click"): (1, 72.0)}
    assert between("device", where="os=iOS") == {
        ("iPhone", "impression → click"): (1, 1.0),
        ("iPhone", "click → lead"): (1, 1.0),
    }


@pytest.mark.parametrize("model", ["last_non_direct", "linear", "w_shaped"])
@pytest.mark.parametrize("data", ["clean", "messy"])
def test_credits_worked_out_per_touch_add_up_to_the_streams(
    data: str, model: str, request: pytest.FixtureRequest
) -> None:
    """The channels report by a touch field credits conversions at query time: summed over
    the field's values, per channel, it must give the stream's credits."""
    from storage.reports.channels import channels_report, touch_credits

    store: ChdbStore = request.getfixturevalue(data)
    streamed = {
        r["channel"]: (r["leads"], r["customers"], r["payments"], r["revenue"])
        for r in channels_report(store, ReportScope(site="q"), model=model).records()
        if r["leads"] or r["payments"]
    }
    assert len(streamed) > 3, "conversions on several channels, to be a test"
    summed: dict[str, list[float]] = {}
    for (_, channel), v in touch_credits(store, ReportScope(site="q", by="device"), model).items():
        cell = summed.setdefault(channel, [0.0, 0.0, 0.0, 0.0])
        for i, name in enumerate(("leads", "customers", "payments", "revenue")):
            cell[i] += v[name]
    asked = {c: v for c, v in summed.items() if v[0] or v[2]}
    assert set(asked) == set(streamed)
    for channel, figures in streamed.items():  # the report rounds: money to 2 places
        assert asked[channel] == pytest.approx([float(x) for x in figures], abs=0.011), channel


def test_channels_by_a_touch_field_split_each_credit_between_its_touches(store: ChdbStore) -> None:
    from storage.reports.channels import channels_report

    x = [
        touch(IMPRESSION, timedelta(0), "x", utm_source="facebook", utm_medium="paid_social"),
        google(CLICK, DAY, "x"),
        make_event(LEAD, DAY + HOUR, person="x", site="h"),
        make_event(
            EventType.PAYMENT,
            2 * DAY,
            person="x",
            site="h",
            customer_id="cust-x",
            order_id="o-x",
            revenue="100",
            currency="EUR",
        ),
    ]
    run(store, x)

    def rows(**options: object) -> dict[tuple[str, str], tuple[object, ...]]:
        table = channels_report(
            store, ReportScope(site="h", by="utm_source"), model="linear", **options
        )  # type: ignore[arg-type]
        return {
            (str(r["group"]), str(r["channel"])): (
                r["impressions"],
                r["clicks"],
                r["leads"],
                r["customers"],
                r["payments"],
                r["revenue"],
                r["spend"],
            )
            for r in table.records()
        }

    assert rows() == {
        ("facebook", "Paid Social"): (1, 0, 0.5, 0.5, 0.5, 50.0, None),
        ("google", "Paid Search"): (0, 1, 0.5, 0.5, 0.5, 50.0, None),
    }
    assert rows(where=parse_conditions("utm_medium=cpc")) == {
        ("google", "Paid Search"): (0, 1, 0.5, 0.5, 0.5, 50.0, None)
    }
