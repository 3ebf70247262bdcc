"""Funnel and drop-off reports, and the raw ``windowFunnel`` oracle.

Step counts come from the aggregates (``agg_stage_day`` / ``agg_stage_hour``, migration 0008)
whenever they can answer: no person-level breakdown and a period on day (or hour) boundaries.
Otherwise they are counted from ``stage_reached``; both give the same numbers (a test holds
them equal). The period filters on ``entered_at``, when the chain that reached the step
started: a report for November is the people who entered the funnel in November, and how far
they got (also after November).

The split into converted / dropped / still in window reads each person's furthest step and
status (``persons.funnel_status``): it scans the persons of the period, so it costs more than
the counts; ``split=False`` skips it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Literal

from funnel.funnels import FunnelMode, FunnelSpec
from funnel.report import DropoffRow, FunnelReport, dropoffs
from storage.backends import Store
from storage.reports.scope import ReportScope, person_groups, resolved_events

__all__ = ["dropoff_report", "funnel_report", "raw_levels", "stage_counts", "step_counts"]

Source = Literal["auto", "aggregates", "raw"]
_DAY, _HOUR = timedelta(days=1), timedelta(hours=1)


def funnel_report(
    store: Store,
    spec: FunnelSpec,
    scope: ReportScope | None = None,
    *,
    split: bool = True,
    source: Source = "auto",
) -> list[FunnelReport]:
    """One funnel report per breakdown value (one in all without a breakdown), largest first."""
    scope = scope or ReportScope()
    counts = step_counts(store, spec, scope, source=source)
    stopped = _stopped(store, spec, scope) if split else {}
    names = [s.name for s in spec.steps]
    reports = []
    for group, by_step in counts.items():
        per_step = [by_step.get(i, 0) for i in range(1, len(names) + 1)]
        status = stopped.get(group, {}) if split else None
        reports.append(
            FunnelReport.from_counts(
                spec.name,
                scope.site,
                names,
                per_step,
                group=group if scope.by else None,
                stopped=[status.get(i, (0, 0)) for i in range(1, len(names) + 1)]
                if status is not None
                else None,
            )
        )
    if not reports:
        reports.append(
            FunnelReport.from_counts(
                spec.name,
                scope.site,
                names,
                [0] * len(names),
                stopped=[(0, 0)] * len(names) if split else None,
            )
        )
    return sorted(reports, key=lambda r: (-r.steps[0].count, r.group or ""))


def dropoff_report(
    store: Store, spec: FunnelSpec, scope: ReportScope | None = None
) -> list[DropoffRow]:
    """Where people leave, per step and breakdown value; the biggest leak of each is flagged."""
    return [row for report in funnel_report(store, spec, scope) for row in dropoffs(report)]


def step_counts(
    store: Store, spec: FunnelSpec, scope: ReportScope, *, source: Source = "auto"
) -> dict[str, dict[int, int]]:
    """Breakdown value → step index (1-based) → persons who reached it."""
    table = _aggregate_for(scope) if source != "raw" else None
    if source == "aggregates" and table is None:
        raise ValueError("the aggregates cannot answer this scope (person-level breakdown?)")
    params: dict[str, object] = {**scope.params(), "funnel": spec.name}
    db = store.database
    if table is not None:
        group = _group(scope, "bucket", "channel", "campaign")
        sql = (
            f"SELECT {group} AS g, step_index, sum(persons) AS n FROM {db}.{table} "
            f"WHERE funnel = {{funnel:String}} AND {scope.site_filter()} "
            "AND toUnixTimestamp(bucket) * 1000 >= {start:Int64} "
            "AND toUnixTimestamp(bucket) * 1000 < {end:Int64} "
            "GROUP BY g, step_index"
        )
    else:
        sql = (
            f"SELECT g, step_index, sum(sign) AS n FROM {stage_rows(db, scope)} "
            "GROUP BY g, step_index"
        )
    out: dict[str, dict[int, int]] = defaultdict(dict)
    for row in store.query(sql, params):
        if int(row["n"]):
            out[str(row["g"])][int(row["step_index"])] = int(row["n"])
    return dict(out)


def _aggregate_for(scope: ReportScope) -> str | None:
    if scope.by in ("temperature", "manager"):
        return None
    if scope.aligned_to(_DAY):
        return "agg_stage_day"
    if scope.aligned_to(_HOUR) and scope.by != "day":
        return "agg_stage_hour"
    return None


def _group(scope: ReportScope, time: str, channel: str, campaign: str) -> str:
    if scope.by == "channel":
        return channel
    if scope.by == "campaign":
        return campaign
    return scope.period_group(time)


def stage_rows(db: str, scope: ReportScope) -> str:
    """``stage_reached`` rows of the funnel in scope with the breakdown value ``g``."""
    if scope.by in ("temperature", "manager"):
        assert scope.by is not None
        return (
            f"(SELECT s.*, ifNull(p.g, '(unknown)') AS g FROM {db}.stage_reached AS s "
            f"LEFT JOIN {person_groups(db, scope.by)} AS p "
            "ON s.site_id = p.site_id AND s.person_id = p.person_id "
            f"WHERE s.funnel = {{funnel:String}} AND {scope.site_filter('s.')} "
            f"AND {scope.period_filter('s.entered_at')} SETTINGS join_use_nulls = 1)"
        )
    group = _group(scope, "entered_at", "entry_channel", "entry_campaign")
    return (
        f"(SELECT *, {group} AS g FROM {db}.stage_reached WHERE funnel = {{funnel:String}} "
        f"AND {scope.site_filter()} AND {scope.period_filter('entered_at')})"
    )


def _stopped(
    store: Store, spec: FunnelSpec, scope: ReportScope
) -> dict[str, dict[int, tuple[int, int]]]:
    """Breakdown value → furthest step → (still in window, dropped) persons."""
    db = store.database
    # Only the funnel's status is taken out of the persons' map before argMax: carrying whole
    # maps through the aggregation costs several times more.
    sql = (
        "SELECT g, level, countIf(status = 'in_window') AS in_window, "
        "countIf(status = 'dropped') AS dropped FROM ("
        "SELECT r.g AS g, r.level AS level, p.status AS status FROM ("
        "SELECT site_id, person_id, max(step_index) AS level, argMin(g, step_index) AS g FROM ("
        f"SELECT site_id, person_id, step_index, g, sum(sign) AS net FROM {stage_rows(db, scope)} "
        "GROUP BY site_id, person_id, step_index, g HAVING net > 0"
        ") GROUP BY site_id, person_id) AS r INNER JOIN ("
        "SELECT site_id, person_id, argMax(funnel_status[{funnel:String}], updated_at) AS status, "
        f"argMax(merged_into, updated_at) AS merged FROM {db}.persons WHERE {scope.site_filter()} "
        "GROUP BY site_id, person_id HAVING merged = ''"
        ") AS p ON r.site_id = p.site_id AND r.person_id = p.person_id"
        ") GROUP BY g, level"
    )
    out: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    for row in store.query(sql, {**scope.params(), "funnel": spec.name}):
        out[str(row["g"])][int(row["level"])] = (int(row["in_window"]), int(row["dropped"]))
    return dict(out)


def stage_counts(store: Store, spec: FunnelSpec, site_id: str | None = None) -> list[int]:
    """Distinct persons who reached each step of ``spec`` (step 1 first), from the raw
    ``stage_reached`` rows (corrections netted out)."""
    counts = step_counts(store, spec, ReportScope(site=site_id), source="raw").get("", {})
    return [counts.get(i, 0) for i in range(1, len(spec.steps) + 1)]


def _step_condition(spec: FunnelSpec, index: int, params: dict[str, object]) -> str:
    step = spec.steps[index]
    params[f"t{index}"] = step.type.value
    parts = [f"event_type = {{t{index}:String}}"]
    for j, (key, value) in enumerate(step.where.items()):
        k, v = f"k{index}_{j}", f"v{index}_{j}"
        params[k], params[v] = key, str(value)
        condition = f"properties[{{{k}:String}}] = {{{v}:String}}"
        if key == "intent":  # lead.intent has a column of its own
            condition += f" OR lead_intent = {{{v}:String}}"
        parts.append(f"({condition})")
    return " AND ".join(parts)


def raw_levels(store: Store, spec: FunnelSpec, site_id: str | None = None) -> dict[str, int]:
    """Funnel level per person computed by ClickHouse over the raw ``events``.

    Ordered and strict funnels use ``windowFunnel`` (``'strict_order'`` for strict); an
    any-order funnel counts the steps reached within the window that opens with the person's
    first step event. This answers ad-hoc funnels straight from ``events`` and is the oracle
    the streaming levels are tested against.
    """
    params: dict[str, object] = {"site": site_id or "", "window": spec.window_ms}
    conditions = [_step_condition(spec, i, params) for i in range(len(spec.steps))]
    where = "({site:String} = '' OR site_id = {site:String})"
    ts = "toUInt64(toUnixTimestamp64Milli(occurred_at))"
    events = resolved_events(store.database)
    if spec.mode is FunnelMode.ANY:
        step = "multiIf(" + ", ".join(f"{c}, {i}" for i, c in enumerate(conditions)) + ", -1)"
        sql = (
            "SELECT person_id, uniqExact(step) AS level FROM ("
            f"SELECT person_id, {ts} AS ts, {step} AS step, "
            "min(if(step >= 0, ts, 18446744073709551615)) OVER (PARTITION BY person_id) AS start "
            f"FROM {events} WHERE {where}"
            ") WHERE step >= 0 AND ts <= start + {window:UInt64} GROUP BY person_id"
        )
    else:
        strict = ", 'strict_order'" if spec.mode is FunnelMode.STRICT else ""
        sql = (
            f"SELECT person_id, windowFunnel({{window:UInt64}}{strict})({ts}, "
            f"{', '.join(conditions)}) AS level FROM {events} "
            f"WHERE {where} GROUP BY person_id"
        )
    return {str(r["person_id"]): int(r["level"]) for r in store.query(sql, params)}
