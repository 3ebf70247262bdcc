"""Reports on the embedded ClickHouse engine: the worked examples end to end (events → the
core → stored facts → aggregates → report), the aggregates against the raw facts, and the
commands' output formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from funnel.events import Event, EventType
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.migrate import migrate
from storage.reports import ReportScope, dropoff_report, funnel_report, step_counts
from storage.reports.attribution import attribution_report
from storage.reports.channels import channels_report
from storage.reports.customers import cohorts_report, forecast_report, leads_report
from storage.reports.timing import time_to_convert_report
from storage.spend import load_spend
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import T0, make_event

CONFIG = CoreConfig.default()
AIDA = CONFIG.funnels.get("aida")  # impression → click → lead → order
SALES = CONFIG.funnels.get("sales")
DAY = timedelta(days=1)


def run_pipeline(store: ChdbStore, events: list[Event]) -> None:
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(events)
    pipeline.flush()


def people(site: str, counts: list[int]) -> list[Event]:
    """Persons who go as far as the counts say through impression → click → lead → order."""
    kinds = [EventType.IMPRESSION, EventType.CLICK, EventType.LEAD, EventType.ORDER]
    events = []
    for i in range(counts[0]):
        level = sum(1 for c in counts if i < c)
        for k in range(level):
            extra = {"order_id": f"o{i}"} if kinds[k] is EventType.ORDER else {}
            events.append(
                make_event(
                    kinds[k], timedelta(seconds=i, hours=k), person=f"p{i}", site=site, **extra
                )
            )
    return events


@pytest.mark.parametrize(
    ("counts", "step_rates", "overall", "one_in"),
    [
        ([1000, 100, 10, 1], [0.1, 0.1, 0.1], 0.001, "1:1000"),
        ([4, 3, 2, 1], [0.75, 0.667, 0.5], 0.25, "1:4"),
        ([4000, 50, 50, 50], [0.0125, 1.0, 1.0], 0.0125, "1:80"),
    ],
)
def test_worked_funnel_examples_end_to_end(
    store: ChdbStore, counts: list[int], step_rates: list[float], overall: float, one_in: str
) -> None:
    run_pipeline(store, people("w", counts))
    period = ReportScope(start=T0, end=T0 + DAY, site="w")
    always = ReportScope(site="w")
    for scope, source in ((period, "auto"), (always, "aggregates"), (always, "raw")):
        (report,) = funnel_report(store, AIDA, scope, source=source)  # type: ignore[arg-type]
        assert [s.count for s in report.steps] == counts
        assert [s.step_conversion for s in report.steps[1:]] == pytest.approx(step_rates, abs=5e-4)
        assert report.overall_conversion == pytest.approx(overall)
        assert report.steps[-1].one_in == one_in


def test_average_check_of_100_1000_and_10000_is_3700(store: ChdbStore) -> None:
    events = [
        make_event(
            EventType.PAYMENT,
            timedelta(hours=i),
            person=f"buyer{i}",
            site="aov",
            customer_id=f"c{i}",
            order_id=f"o{i}",
            revenue=str(value),
            currency="USD",
        )
        for i, value in enumerate((100, 1000, 10000))
    ]
    run_pipeline(store, events)
    table = channels_report(store, ReportScope(site="aov"))
    (row,) = table.records()
    assert row["channel"] == "Direct"  # no touches: the conversion credits Direct
    assert row["payments"] == 3
    assert row["revenue"] == 11100
    assert row["aov"] == 3700


@pytest.fixture(scope="module")
def simulated(chdb_engine: ChdbStore, tmp_path_factory: pytest.TempPathFactory) -> ChdbStore:
    """A simulated site with cross-device identities (merges correct landed facts) and its
    spend."""
    engine = chdb_engine.using(f"reports_{uuid.uuid4().hex[:8]}")
    migrate(engine)
    sim = simulate(1500, seed=11, site_id="sim", multi_device=0.5)
    run_pipeline(engine, sim.events)
    spend = tmp_path_factory.mktemp("spend") / "spend.csv"
    sim.write_spend(spend)
    assert not load_spend(engine, spend, site_id="sim").rejected
    return engine


BREAKDOWNS = [None, "channel", "campaign", "day", "week", "month", "temperature", "manager"]


@pytest.mark.parametrize("by", [None, "temperature", "manager"])
def test_facts_aggregates_and_chains_agree_over_all_time(
    simulated: ChdbStore, by: str | None
) -> None:
    corrections = simulated.query(
        f"SELECT count() AS n FROM {simulated.database}.stage_reached WHERE sign < 0"
    )
    assert int(corrections[0]["n"]) > 0, "the data must contain corrections to be a test"
    scope = ReportScope(site="sim", by=by)  # type: ignore[arg-type]
    raw = step_counts(simulated, SALES, scope, source="raw")
    assert raw, "the scope must hold data"
    assert step_counts(simulated, SALES, scope, source="chains") == raw
    assert step_counts(simulated, SALES, scope) == raw
    if by is None:
        assert step_counts(simulated, SALES, scope, source="aggregates") == raw


@pytest.mark.parametrize("by", BREAKDOWNS)
def test_period_funnels_never_increase_from_step_to_step(
    simulated: ChdbStore, by: str | None
) -> None:
    for scope in (
        ReportScope(site="sim", by=by),  # type: ignore[arg-type]
        ReportScope(start=T0 + 3 * DAY, end=T0 + 17 * DAY, site="sim", by=by),  # type: ignore[arg-type]
        ReportScope(start=T0 + 3 * DAY + timedelta(hours=5), end=T0 + 9 * DAY, by=by),  # type: ignore[arg-type]
    ):
        counts = step_counts(simulated, SALES, scope)
        assert counts, "the scope must hold data"
        for group, steps in counts.items():
            series = [steps.get(i, 0) for i in range(1, len(SALES.steps) + 1)]
            assert series == sorted(series, reverse=True), (scope, group, series)
        if scope.start is not None or by in ("channel", "campaign", "day", "week", "month"):
            with pytest.raises(ValueError, match="cannot answer"):
                step_counts(simulated, SALES, scope, source="raw")


def test_funnel_split_and_dropoff_add_up(simulated: ChdbStore) -> None:
    for report in funnel_report(simulated, SALES, ReportScope(site="sim", by="channel")):
        for here, there in zip(report.steps, report.steps[1:], strict=False):
            assert here.count == there.count + (here.stopped_in_window or 0) + (
                here.stopped_dropped or 0
            )
    rows = dropoff_report(simulated, SALES, ReportScope(site="sim"))
    assert sum(r.biggest_leak for r in rows) == 1
    worst = max(rows, key=lambda r: r.dropoff_rate or 0)
    assert worst.biggest_leak
    for r in rows:
        assert r.reached == r.continued + r.dropped + r.in_window


def test_dropped_only_after_the_window_expired(store: ChdbStore) -> None:
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(people("exp", [10, 5, 0, 0]))
    pipeline.flush()
    before = dropoff_report(store, AIDA, ReportScope(site="exp"))[0]
    assert (before.dropped, before.in_window) == (0, 5)  # windows still open: nobody dropped
    pipeline.expire(int((T0 + 365 * DAY).timestamp() * 1000))  # the status timer, a year on
    pipeline.flush()
    after = dropoff_report(store, AIDA, ReportScope(site="exp"))[0]
    assert after.in_window == 0
    assert after.dropped == 5


def test_attribution_shows_the_models_asked_for_with_the_same_figures(
    simulated: ChdbStore,
) -> None:
    scope = ReportScope(site="sim")
    every = attribution_report(simulated, scope)
    chosen = attribution_report(simulated, scope, models=("shapley", "first_touch"))
    assert chosen.columns == (
        "channel",
        "shapley",
        "first_touch",
        "shapley_revenue",
        "first_touch_revenue",
    )
    assert chosen.meta["models"] == ["shapley", "first_touch"]
    full = {r["channel"]: r for r in every.records()}
    for row in chosen.records():
        assert all(row[c] == full[row["channel"]][c] for c in chosen.columns)


def test_attribution_models_side_by_side_credit_every_conversion(simulated: ChdbStore) -> None:
    for scope in (ReportScope(site="sim"), ReportScope(start=T0, end=T0 + 40 * DAY, site="sim")):
        table = attribution_report(simulated, scope)
        models = table.meta["models"]
        assert isinstance(models, list)
        assert "markov" in models
        assert "shapley" in models
        totals = {m: sum(float(r[m]) for r in table.records()) for m in models}  # type: ignore[arg-type]
        payments = simulated.query(
            f"SELECT count() AS n FROM {simulated.database}.events "
            "WHERE site_id = 'sim' AND event_type = 'payment' "
            f"AND {scope.period_filter('occurred_at')}",
            scope.params(),
        )
        assert totals == pytest.approx(dict.fromkeys(models, float(payments[0]["n"])), abs=1e-4)


def test_channels_report_uses_the_loaded_spend(simulated: ChdbStore) -> None:
    table = channels_report(simulated, ReportScope(site="sim"), target_cpl=10.0)
    rows = {r["channel"]: r for r in table.records()}
    spend = simulated.query(
        f"SELECT channel, sum(cost) AS cost FROM {simulated.database}.spend FINAL GROUP BY channel"
    )
    assert spend
    for s in spend:
        row = rows[s["channel"]]
        assert row["spend"] == pytest.approx(float(s["cost"]), abs=0.01)
        if row["leads"]:
            assert row["cpl"] == pytest.approx(row["spend"] / row["leads"], rel=1e-3)
            assert row["cpl_vs_target"] == pytest.approx(row["cpl"] / 10.0, rel=1e-3)
    impressions = simulated.query(
        f"SELECT count() AS n FROM {simulated.database}.events "
        "WHERE site_id = 'sim' AND event_type = 'impression'"
    )
    assert sum(int(r["impressions"]) for r in rows.values()) == int(impressions[0]["n"])  # type: ignore[call-overload]


def test_spend_reload_replaces_and_bad_lines_are_reported(store: ChdbStore, tmp_path: Path) -> None:
    path = tmp_path / "spend.csv"
    path.write_text(
        "date,site_id,channel,campaign,cost,currency\n"
        "2026-10-01,s,Paid Search,brand,100.50,USD\n"
        "2026-10-01,s,Email,,-1,USD\n"
        "not-a-date,s,Email,,1,USD\n",
        encoding="utf-8",
    )
    first = load_spend(store, path)
    assert first.loaded == 1
    assert [r["reason"] for r in first.rejected] == ["invalid_cost", "invalid_date"]
    assert [r["line"] for r in first.rejected] == [3, 4]
    load_spend(store, path)
    total = store.query(f"SELECT sum(cost) AS c FROM {store.database}.spend FINAL")
    assert Decimal(str(total[0]["c"])) == Decimal("100.5")


def test_customer_reports(simulated: ChdbStore) -> None:
    cohorts = cohorts_report(simulated, ReportScope(site="sim", by="week"))
    assert sum(int(r["people"]) for r in cohorts.records()) > 0  # type: ignore[call-overload]
    for r in cohorts.records():
        assert 0 <= float(r["repeat_rate"] or 0) <= 1  # type: ignore[arg-type]
        assert int(r["regular"]) <= int(r["customers"]) <= int(r["people"])  # type: ignore[call-overload]
    leads = leads_report(simulated, ReportScope(site="sim"))
    assert {r["temperature"] for r in leads.records()} <= {"cold", "warm", "hot"}
    forecast = forecast_report(simulated, ReportScope(site="sim"), now=T0 + 45 * DAY)
    assert float(forecast.meta["expected_payments"]) >= 0  # type: ignore[arg-type]
    for r in forecast.records():
        assert 0 <= float(r["rate"]) <= 1  # type: ignore[arg-type]
    timing = time_to_convert_report(simulated, SALES, ReportScope(site="sim"))
    between = [r["between"] for r in timing.records()]
    assert between[-1] == "first touch → payment"
    for r in timing.records():
        assert float(r["p50_hours"]) <= float(r["p90_hours"])  # type: ignore[arg-type]


def funnel_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("funnel")), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_commands_print_table_json_and_csv(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    demo = funnel_cli("demo", "--persons", "300", "--store", store, "--format", "json")
    assert demo.returncode == 0, demo.stderr
    commands = [
        ["funnel", "--by", "channel"],
        ["dropoff"],
        ["time-to-convert"],
        ["attribution"],
        ["attribution", "--models", "linear,markov"],
        ["channels"],
        ["cohorts"],
        ["leads"],
        ["forecast"],
    ]
    for command in commands:
        for fmt in ("table", "json", "csv"):
            result = funnel_cli("report", *command, "--store", store, "--format", fmt)
            assert result.returncode == 0, (command, fmt, result.stderr)
            if fmt == "json":
                assert json.loads(result.stdout)
            elif fmt == "csv":
                rows = list(csv.reader(io.StringIO(result.stdout)))
                assert len(rows) >= 2
                assert all(len(r) == len(rows[0]) for r in rows)
    bad = funnel_cli(
        "report", "funnel", "--from", "2026-11-02", "--to", "2026-11-01", "--store", store
    )
    assert bad.returncode == 2
    assert "before its end" in bad.stderr
    chosen = funnel_cli(
        "report", "attribution", "--models", "markov,linear", "--store", store, "--format", "csv"
    )
    header = next(csv.reader(io.StringIO(chosen.stdout)))
    assert header == ["channel", "markov", "linear", "markov_revenue", "linear_revenue"]
    unknown = funnel_cli("report", "attribution", "--models", "linear,lastclick", "--store", store)
    assert unknown.returncode == 2
    assert "'lastclick'" in unknown.stderr
    assert "--models" in unknown.stderr
