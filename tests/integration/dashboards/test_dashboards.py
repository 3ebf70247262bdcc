"""The Grafana dashboards: the committed JSON is the generator's output, every dashboard is
structurally sound, every ClickHouse query (panels and variables) runs on chDB over demo
data after the plugin's macros and the variables are expanded as Grafana would, returns the
columns its panel reads and rows where data exists, answers what the reports answer, and
every Prometheus series a panel reads exists in ``funnel.metrics``.

The demo data: simulated traffic through the embedded pipeline (cross-device identities, so
merges correct landed facts), the status timer run at the last event (people whose window
ended are dropped, the rest in window), and the simulated spend. Built once per module, in a
database of its own in the session's chDB engine (building it per panel would take minutes).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.boards.grafana_sql import QueryContext, render
from dashboards.boards.model import (
    SCHEMA_VERSION,
    CustomVariable,
    Dashboard,
    Format,
    Panel,
    PromQuery,
    QueryVariable,
    SqlQuery,
)
from dashboards.generate import OUTPUT, build_all
from dashboards.generate import render as render_json
from funnel import metrics
from funnel.funnels import FunnelCatalog
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.migrate import migrate
from storage.reports import ReportScope, funnel_report
from storage.reports.channels import channels_report
from storage.reports.customers import leads_report
from storage.spend import load_spend
from stream_processors.embedded import EmbeddedPipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"
CONFIG = CoreConfig.default()
DASHBOARDS = build_all(FunnelCatalog.default())
SITE = "shop"
_NUMERIC = re.compile(r"^(U?Int\d+|Float\d+|Decimal.*|Bool)$")
_TIME = re.compile(r"^(DateTime.*|Date|Date32)$")


def _committed() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(OUTPUT.glob("*.json"))}


def _targets(kind: type[SqlQuery] | type[PromQuery]) -> Iterator[tuple[Dashboard, Panel, Any]]:
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for target in panel.targets:
                if isinstance(target, kind):
                    yield dashboard, panel, target


SQL_TARGETS = list(_targets(SqlQuery))
PROM_TARGETS = list(_targets(PromQuery))


def _id(item: tuple[Dashboard, Panel, Any]) -> str:
    dashboard, panel, target = item
    return f"{dashboard.uid}/{panel.title}/{target.ref_id}"


# -- the files ---------------------------------------------------------------------------


def test_committed_json_is_a_fresh_generation() -> None:
    expected = {f"{d.uid}.json": render_json(d) for d in DASHBOARDS}
    committed = {p.name: p.read_text("utf-8") for p in OUTPUT.glob("*.json")}
    assert committed == expected, "run: python -m dashboards.generate"


def test_every_dashboard_is_structurally_sound() -> None:
    files = _committed()
    assert len(files) == 5
    provisioned = {ds["uid"]: ds["type"] for ds in _yaml(_datasources_file())["datasources"]}
    uids = [d["uid"] for d in files.values()]
    assert len(set(uids)) == len(uids)
    assert len({d["title"] for d in files.values()}) == len(files)
    for name, board in files.items():
        assert name == f"{board['uid']}.json"
        assert board["schemaVersion"] == SCHEMA_VERSION
        defined = {v["name"] for v in board["templating"]["list"]}
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), name
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            where = f"{name}: {panel['title']}"
            ds = panel["datasource"]
            assert provisioned.get(ds["uid"]) == ds["type"], where
            grid = panel["gridPos"]
            assert {"h", "w", "x", "y"} <= set(grid), where
            assert grid["w"] > 0, where
            assert grid["h"] > 0, where
            assert grid["x"] + grid["w"] <= 24, where
            mine = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & mine, f"{where} overlaps another panel"
            cells |= mine
            targets = panel["targets"]
            assert targets, where
            assert len({t["refId"] for t in targets}) == len(targets), where
            for target in targets:
                assert target["datasource"] == ds, where
                text = target.get("rawSql") or target.get("expr")
                assert text, where
                if ds["uid"] == "clickhouse":
                    assert target["format"] in (0, 1), where
                    assert target["editorType"] == "sql", where
                used = _variables_used(text) | _variables_used(panel["title"])
                assert used <= defined, f"{where} uses undefined variables {used - defined}"
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                used = _variables_used(variable["query"])
                assert used <= defined - {variable["name"]}, f"{name}: {variable['name']}"


def test_table_panels_show_the_columns_their_query_returns() -> None:
    for _, panel, target in SQL_TARGETS:
        if panel.type != "table":
            continue
        (organize,) = panel.to_json(1, 0, 0)["transformations"]  # type: ignore[misc]  # a list
        assert list(organize["options"]["indexByName"]) == list(target.columns), panel.title


def test_provisioning_reads_secrets_from_the_environment() -> None:
    datasources = {ds["uid"]: ds for ds in _yaml(_datasources_file())["datasources"]}
    clickhouse, prometheus = datasources["clickhouse"], datasources["prometheus"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    assert clickhouse["jsonData"]["protocol"] == "native"
    assert clickhouse["jsonData"]["username"] == "${CLICKHOUSE_USER}"
    assert clickhouse["secureJsonData"] == {"password": "${CLICKHOUSE_PASSWORD}"}
    assert prometheus["type"] == "prometheus"
    (provider,) = _yaml(PROVISIONING / "dashboards" / "dashboards.yml")["providers"]
    # docker-compose.yml mounts the generated dashboards there
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    compose = (ROOT / "docker-compose.yml").read_text("utf-8")
    assert "./dashboards/grafana/dashboards:/etc/grafana/dashboards" in compose
    assert "./dashboards/grafana/provisioning:/etc/grafana/provisioning" in compose
    # every ${VAR} the data sources read is set in the Grafana service's environment
    grafana = compose[compose.index("\n  grafana:") :]
    values = json.dumps(list(datasources.values()))
    for name in set(re.findall(r"\$\{(\w+)\}", values)):
        assert f"\n      {name}:" in grafana, name


# -- Prometheus ----------------------------------------------------------------------------


@pytest.mark.parametrize("item", PROM_TARGETS, ids=_id)
def test_prometheus_panels_read_defined_series(item: tuple[Dashboard, Panel, PromQuery]) -> None:
    _, panel, target = item
    names = set(re.findall(r"\b(funnel_[a-z0-9_]+)", target.expr))
    assert names, panel.title
    for name in names:
        assert re.sub(r"_(total|bucket|sum|count)$", "", name) in metrics.ALL, name
    assert target.expr.count("(") == target.expr.count(")"), target.expr


def test_every_series_is_on_a_dashboard() -> None:
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for _, _, target in PROM_TARGETS
        for name in re.findall(r"\b(funnel_[a-z0-9_]+)", target.expr)
    }
    assert used == set(metrics.ALL) - {metrics.COLLECTOR_REQUESTS}


# -- ClickHouse ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Demo:
    store: ChdbStore
    start: datetime
    """The first event's hour."""
    end: datetime
    """One minute after the last payment (so the last 15 minutes hold a payment)."""


@pytest.fixture(scope="module")
def demo(chdb_engine: ChdbStore, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    store = chdb_engine.using(f"grafana_{uuid.uuid4().hex[:8]}")
    migrate(store)
    sim = simulate(1200, seed=5, site_id=SITE, multi_device=0.3)
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(sim.events)
    last = max(e.occurred_at for e in sim.events)
    assert pipeline.expire(int(last.timestamp() * 1000))  # some windows ended: dropped
    pipeline.flush()
    spend = tmp_path_factory.mktemp("spend") / "spend.csv"
    sim.write_spend(spend)
    assert not load_spend(store, spend, site_id=SITE).rejected
    first = min(e.occurred_at for e in sim.events).replace(minute=0, second=0, microsecond=0)
    paid = max(e.occurred_at for e in sim.events if e.type.value == "payment")
    return Demo(store, first.astimezone(UTC), paid.astimezone(UTC) + timedelta(minutes=1))


def _context(
    demo: Demo, dashboard: Dashboard, *, end: datetime | None = None, **chosen: str
) -> QueryContext:
    """The dashboard's variables resolved in order, like Grafana: each query variable runs
    (and must return options); a chosen value must be among them; a multi-value variable
    with *All* takes every option unless a value is chosen."""
    ctx = QueryContext(demo.start, end or demo.end, timedelta(hours=1), {})
    values: dict[str, str | tuple[str, ...]] = {}
    selected_all: set[str] = set()
    for variable in dashboard.variables:
        ctx = QueryContext(
            ctx.time_from, ctx.time_to, ctx.interval, values, frozenset(selected_all)
        )
        if isinstance(variable, QueryVariable):
            rows = demo.store.query(render(variable.sql, ctx))
            options = [str(next(iter(r.values()))) for r in rows]
            assert options, f"variable {variable.name} has no options"
            if variable.name in chosen:
                assert chosen[variable.name] in options, (variable.name, options)
                values[variable.name] = (chosen[variable.name],)
            elif variable.include_all:
                values[variable.name] = tuple(options)
                selected_all.add(variable.name)
            else:
                pick = variable.default if variable.default in options else options[0]
                values[variable.name] = pick or options[0]
        elif isinstance(variable, CustomVariable):
            values[variable.name] = variable.default if variable.multi else variable.default[0]
        else:
            values[variable.name] = demo.store.database
    return QueryContext(ctx.time_from, ctx.time_to, ctx.interval, values, frozenset(selected_all))


def _run(demo: Demo, target: SqlQuery, ctx: QueryContext) -> list[dict[str, Any]]:
    sql = render(target.sql, ctx)
    assert "$" not in sql, f"unexpanded macro or variable in:\n{sql}"
    described = demo.store.query(f"DESCRIBE ({sql})")
    names = [str(row["name"]) for row in described]
    types = [_base_type(str(row["type"])) for row in described]
    assert tuple(names) == target.columns
    numeric = [bool(_NUMERIC.match(t)) for t in types]
    assert any(numeric), f"no numeric column: {list(zip(names, types, strict=True))}"
    if target.format is Format.TIME_SERIES:
        assert _TIME.match(types[0]), f"a time series starts with its time column: {types[0]}"
        assert all(n or t == "String" for n, t in zip(numeric[1:], types[1:], strict=True))
    return demo.store.query(sql)


@pytest.mark.parametrize("item", SQL_TARGETS, ids=_id)
def test_panel_sql_returns_its_columns_and_rows(
    demo: Demo, item: tuple[Dashboard, Panel, SqlQuery]
) -> None:
    dashboard, panel, target = item
    rows = _run(demo, target, _context(demo, dashboard))
    assert rows, f"{panel.title}: no rows"
    numbers = [v for row in rows for v in row.values() if isinstance(v, int | float)]
    assert any(numbers), f"{panel.title}: every value is zero"
    if panel.type in ("bargauge", "piechart", "barchart"):
        assert isinstance(rows[0][target.columns[0]], str), "a name column first"


@pytest.mark.parametrize("item", SQL_TARGETS, ids=_id)
def test_panel_sql_runs_with_one_channel_and_campaign(
    demo: Demo, item: tuple[Dashboard, Panel, SqlQuery]
) -> None:
    dashboard, _, target = item
    names = {v.name for v in dashboard.variables}
    chosen = {"channel": "Paid Search", "campaign": "brand_search"}
    _run(demo, target, _context(demo, dashboard, **{k: v for k, v in chosen.items() if k in names}))


# -- the panels answer what the reports answer ----------------------------------------------


def _panel(uid: str, title: str) -> tuple[Dashboard, SqlQuery]:
    (dashboard,) = [d for d in DASHBOARDS if d.uid == uid]
    (panel,) = [p for p in dashboard.panels if p.title.startswith(title)]
    (target,) = panel.targets
    assert isinstance(target, SqlQuery)
    return dashboard, target


def _all_of(demo: Demo, uid: str, title: str) -> list[dict[str, Any]]:
    """The panel over every entry hour of the data (the range ends a year after)."""
    dashboard, target = _panel(uid, title)
    return _run(demo, target, _context(demo, dashboard, end=demo.end + timedelta(days=365)))


def test_funnel_panels_equal_the_funnel_report(demo: Demo) -> None:
    scope = ReportScope(start=demo.start, end=demo.end + timedelta(days=366), site=SITE)
    (report,) = funnel_report(demo.store, CONFIG.funnels.get("sales"), scope)
    steps = _all_of(demo, "funnel-overview", "Persons per step")
    assert [r["persons"] for r in steps] == [s.count for s in report.steps]
    assert [r["step"] for r in steps] == [f"{s.index}. {s.step}" for s in report.steps]
    table = _all_of(demo, "funnel-overview", "Step and overall conversion")
    assert [r["one_in"] for r in table[1:]] == [s.one_in for s in report.steps[1:]]
    assert [r["lost"] for r in table] == [s.dropped_from_previous for s in report.steps]
    for row, step in zip(table[1:], report.steps[1:], strict=True):
        assert row["step_conversion"] == pytest.approx(step.step_conversion, abs=1e-4)
        assert row["overall_conversion"] == pytest.approx(step.overall_conversion, abs=1e-4)
    stopped = {
        r["step"]: (r["in_window"], r["dropped"])
        for r in _all_of(demo, "funnel-overview", "Stopped at each step")
    }
    expected = {
        f"{s.index}. {s.step}": (s.stopped_in_window, s.stopped_dropped)
        for s in report.steps
        if (s.stopped_in_window, s.stopped_dropped) != (0, 0)
    }
    assert {k: v for k, v in stopped.items() if v != (0, 0)} == expected
    assert any(dropped for _, dropped in expected.values())  # the timer dropped some
    status = {r["status"]: r["persons"] for r in _all_of(demo, "funnel-overview", "Converted")}
    assert sum(status.values()) == report.steps[0].count
    assert status["in_window"] == sum(s.stopped_in_window or 0 for s in report.steps)
    assert status["dropped"] == sum(s.stopped_dropped or 0 for s in report.steps)
    assert status["converted"] == report.steps[-1].count


def test_funnel_panels_take_entries_in_the_range_like_the_report(demo: Demo) -> None:
    """A range inside the data (DESIGN §6 periods): the panel counts the chains entering in
    it, as the report does, and never more people at a step than at the one before."""
    dashboard, target = _panel("funnel-overview", "Persons per step")
    start, end = demo.start + timedelta(days=3), demo.start + timedelta(days=9)
    ctx = _context(demo, dashboard)
    ctx = QueryContext(start, end, ctx.interval, ctx.variables, ctx.all_selected)
    steps = [r["persons"] for r in _run(demo, target, ctx)]
    scope = ReportScope(start=start, end=end + timedelta(milliseconds=1), site=SITE)
    (report,) = funnel_report(demo.store, CONFIG.funnels.get("sales"), scope)
    assert steps == [s.count for s in report.steps]
    assert steps == sorted(steps, reverse=True)
    assert steps[1] > 0, "the range must hold chains that went on"


def test_channel_economics_equal_the_channels_report(demo: Demo) -> None:
    scope = ReportScope(start=demo.start.replace(hour=0), site=SITE)
    report = {r["channel"]: r for r in channels_report(demo.store, scope).records()}
    panel = {r["channel"]: r for r in _all_of(demo, "funnel-channels", "Channel economics")}
    assert {c for c, r in report.items() if r["spend"] or r["leads"] or r["payments"]} <= set(panel)
    for channel, row in panel.items():
        expected = report[channel]
        for key in ("spend", "leads", "customers", "payments", "revenue", "cpl", "cac", "roas"):
            want = expected[key]
            assert (row[key] is None) == (want is None), (channel, key)
            if want is not None:
                assert row[key] == pytest.approx(want, abs=0.011), (channel, key)


def test_lead_conversion_equals_the_leads_report(demo: Demo) -> None:
    report = {
        r["temperature"]: r for r in leads_report(demo.store, ReportScope(site=SITE)).records()
    }
    panel = {r["temperature"]: r for r in _all_of(demo, "funnel-leads", "Conversion to payment")}
    assert set(panel) == set(report)
    for temperature, row in panel.items():
        want = report[temperature]
        assert (row["leads"], row["clients"]) == (want["leads"], want["clients"])
        assert row["conversion"] == pytest.approx(want["conversion"], abs=1e-4)
        if want["lead_to_client_p50_hours"] is not None:
            assert row["lead_to_client_p50_hours"] == pytest.approx(
                want["lead_to_client_p50_hours"], abs=0.011
            )


def test_forecast_is_open_leads_times_the_historical_rate(demo: Demo) -> None:
    rows = _all_of(demo, "funnel-leads", "Open leads by age")
    assert {r["age"] for r in rows} <= {"0-7d", "7-30d", "30-90d", "90d+"}
    for row in rows:
        assert 0 <= row["rate_30d"] <= 1
        assert row["expected_payments_30d"] == pytest.approx(
            round(row["open_leads"] * row["rate_30d"], 2), abs=0.011
        )
    assert sum(r["expected_payments_30d"] for r in rows) > 0


# -- helpers -------------------------------------------------------------------------------


def _base_type(name: str) -> str:
    """``LowCardinality(Nullable(String))`` → ``String``."""
    while (inner := re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", name)) != name:
        name = inner
    return name


def _variables_used(text: str) -> set[str]:
    names = set(re.findall(r"\$\{(\w+)", text)) | set(re.findall(r"\$(\w+)", text))
    return {n for n in names if not n.startswith("__")}


def _datasources_file() -> Path:
    return PROVISIONING / "datasources" / "datasources.yml"


def _yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return loaded
