"""Funnel and drop-off reports, and the raw ``windowFunnel`` oracle.

Periods (DESIGN §6): a person counts in a period through the chains whose step-1 event falls
in it, at the deepest step any of those chains reached within the window (even after the
period's end), once per period or breakdown value. Step counts therefore never increase from
one step to the next, in any period or breakdown.

Two sources give these numbers:

* **The stream's facts** (``stage_reached``, or its aggregates ``agg_stage_day`` /
  ``agg_stage_hour``): a person's row per step reached, over all time. They answer the
  all-time report, and its person-level breakdowns (temperature, manager), fast.
* **Chains** (:func:`period_levels`): ``windowFunnel`` over the stored events of resolved
  persons, with step 1 restricted to the events that enter the funnel in the period and, for a
  breakdown, with that breakdown value (a day, week or month of the entry; its channel or
  campaign: the entry touch). This answers periods, time buckets and touch breakdowns, which
  the facts cannot: a step's row is dated by the chain that first reached it, so a person whose
  November chain reached a step first reached in October would count in neither month right.
  It also answers ``include_bots`` (the stream derives nothing from bots' events).

Both agree where both answer (a test holds them equal). Any-order funnels have one window per
person, opened by its first event of any step: the person counts in the period (and bucket)
of that event. Strict funnels use ``windowFunnel``'s ``strict_order`` over the events from the
period's start, step 1 restricted the same way.

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
from storage.reports.query import Condition, FunnelQuery, all_of
from storage.reports.scope import ReportScope, person_groups, resolved_events

__all__ = ["dropoff_report", "funnel_report", "raw_levels", "stage_counts", "step_counts"]

Source = Literal["auto", "aggregates", "raw", "chains"]
Funnel = FunnelSpec | FunnelQuery
"""A configured funnel, or one asked at query time (:mod:`storage.reports.query`)."""
_DAY, _HOUR = timedelta(days=1), timedelta(hours=1)


def as_query(funnel: Funnel) -> FunnelQuery:
    return funnel if isinstance(funnel, FunnelQuery) else FunnelQuery.of(funnel)


def funnel_report(
    store: Store,
    funnel: Funnel,
    scope: ReportScope | None = None,
    *,
    split: bool = True,
    source: Source = "auto",
) -> list[FunnelReport]:
    """One funnel report per breakdown value (one in all without a breakdown), largest first."""
    scope = scope or ReportScope()
    spec = as_query(funnel)
    counts = step_counts(store, spec, scope, source=source)
    stopped = _stopped(store, spec, scope) if split else {}
    names = spec.names
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
    store: Store, funnel: Funnel, scope: ReportScope | None = None
) -> list[DropoffRow]:
    """Where people leave, per step and breakdown value; the biggest leak of each is flagged."""
    return [row for report in funnel_report(store, funnel, scope) for row in dropoffs(report)]


def needs_chains(scope: ReportScope, funnel: Funnel | None = None) -> bool:
    """Whether ``scope`` (of ``funnel``) is answered from chains (see the module docstring),
    not the facts: a period, a touch breakdown, bots, or a funnel asked at query time."""
    return (
        scope.start is not None
        or scope.end is not None
        or scope.by in ("day", "week", "month", "channel", "campaign")
        or scope.by_touch
        or scope.include_bots
        or (funnel is not None and not as_query(funnel).configured)
    )


def step_counts(
    store: Store, funnel: Funnel, scope: ReportScope, *, source: Source = "auto"
) -> dict[str, dict[int, int]]:
    """Breakdown value → step index (1-based) → persons who reached it."""
    spec = as_query(funnel)
    if source == "chains" or (source == "auto" and needs_chains(scope, spec)):
        return _chain_counts(store, spec, scope)
    if needs_chains(scope, spec):
        raise ValueError(
            "the stream's facts cannot answer a period, a touch breakdown or a funnel asked "
            "at query time"
        )
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


def _chain_counts(store: Store, spec: FunnelQuery, scope: ReportScope) -> dict[str, dict[int, int]]:
    params: dict[str, object] = {}
    sql = (
        f"SELECT g, level, count() AS n FROM {levels_sql(store.database, spec, scope, params)} "
        "WHERE level > 0 GROUP BY g, level"
    )
    reached: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in store.query(sql, params):
        for step in range(1, int(row["level"]) + 1):
            reached[str(row["g"])][step] += int(row["n"])
    return {g: dict(steps) for g, steps in reached.items()}


def period_levels(
    store: Store, funnel: Funnel, scope: ReportScope
) -> dict[tuple[str, str, str], int]:
    """``(site, person, breakdown value)`` → the deepest step of the person's chains that
    enter the funnel in the period with that value (DESIGN §6 periods; persons resolved)."""
    params: dict[str, object] = {}
    levels = levels_sql(store.database, as_query(funnel), scope, params)
    sql = f"SELECT * FROM {levels} WHERE level > 0"
    return {
        (str(r["site_id"]), str(r["person_id"]), str(r["g"])): int(r["level"])
        for r in store.query(sql, params)
    }


def _entry_group(scope: ReportScope, params: dict[str, object]) -> str:
    """The breakdown value of an entry event (a column expression of ``events``)."""
    if scope.by == "channel":
        return "channel"
    if scope.by == "campaign":
        return "campaign"
    if scope.by_touch:
        return scope.touch_group(params)
    return scope.period_group("occurred_at")


def levels_sql(db: str, spec: FunnelQuery, scope: ReportScope, params: dict[str, object]) -> str:
    """A subquery of ``(site_id, person_id, g, level, entered)``: per person and breakdown
    value, the deepest step of the chains entering in the period with that value (module
    docstring) and the latest such entry (epoch ms). Person-level breakdowns (temperature,
    manager) join their value onto it; a funnel's exclusions leave out the persons they
    name. Fills ``params``."""
    params.update(scope.params())
    person_level = scope.by in ("temperature", "manager")
    events = resolved_events(db, include_bots=scope.include_bots)
    entry = all_of(spec.where, params)
    sql = chain_levels_sql(
        spec,
        events=events,
        where=scope.site_filter(),
        start="{start:Int64}",
        end="{end:Int64}",
        group="''" if person_level else _entry_group(scope, params),
        entry=entry,
        params=params,
    )
    if spec.exclusions:
        sql = (
            f"(SELECT * FROM {sql} WHERE (site_id, person_id) NOT IN "
            f"{_excluded(spec, events, scope.site_filter(), entry, params)})"
        )
    if not person_level:
        return sql
    assert scope.by is not None
    return (
        "(SELECT l.site_id AS site_id, l.person_id AS person_id, ifNull(p.g, '(unknown)') AS g, "
        f"l.level AS level, l.entered AS entered FROM {sql} AS l "
        f"LEFT JOIN {person_groups(db, scope.by)} AS p "
        "ON l.site_id = p.site_id AND l.person_id = p.person_id SETTINGS join_use_nulls = 1)"
    )


def entry_sql(spec: FunnelQuery, params: dict[str, object] | None) -> str:
    """The condition of an event that can enter ``spec``: step 1's, or in an any-order
    funnel any step's (its window opens at the first of them)."""
    if spec.mode is FunnelMode.ANY:
        return " OR ".join(f"({s.sql(params, f't{i}')})" for i, s in enumerate(spec.steps))
    return spec.steps[0].sql(params, "t0")


def _excluded(
    spec: FunnelQuery, events: str, where: str, entry: str, params: dict[str, object]
) -> str:
    """``(site_id, person_id)`` of the persons who did an exclusion step after their first
    entry in the period (:func:`entry_sql`) and within the window."""
    ms = "toUnixTimestamp64Milli(occurred_at)"
    first = entry_sql(spec, params)
    excluded = " OR ".join(
        f"({step.sql(params, f'x{i}')})" for i, step in enumerate(spec.exclusions)
    )
    window = str(spec.window_ms)
    return (
        "(SELECT site_id, person_id FROM (SELECT site_id, person_id, "
        f"minIf(ts, e) AS first, groupArrayIf(ts, x) AS xs FROM (SELECT site_id, person_id, "
        f"{ms} AS ts, ({first}) AND ({entry}) AND ts >= {{start:Int64}} "
        f"AND ts < {{end:Int64}} AS e, ({excluded}) AS x FROM {events} WHERE {where} "
        f"AND {ms} >= {{start:Int64}} AND {ms} < {{end:Int64}} + {window}) "
        "GROUP BY site_id, person_id HAVING countIf(e) > 0) "
        f"WHERE arrayExists(t -> t >= first AND t <= first + {window}, xs))"
    )


def chain_levels_sql(
    funnel: Funnel,
    *,
    events: str,
    where: str,
    start: str,
    end: str,
    group: str,
    entry: str = "1",
    params: dict[str, object] | None = None,
) -> str:
    """``(site_id, person_id, g, level, entered)`` of DESIGN §6 periods, as SQL for any
    caller (the reports bind parameters; a dashboard passes its own macros); ``entered`` is
    the latest entry of the person with that value (epoch ms).

    ``events`` is the events' subquery (persons resolved), ``where`` filters them (the site),
    ``start``/``end`` are the period's ends in epoch milliseconds (SQL expressions),
    ``group`` is the breakdown value of an entry event (an expression over its columns) and
    ``entry`` narrows which step-1 events may enter (e.g. a dashboard's channel filter). With
    ``params`` the step conditions are bound parameters; without, quoted literals.
    """
    spec = as_query(funnel)
    n = len(spec.steps)
    steps = ", ".join(f"({step.sql(params, f't{i}')}) AS s{i}" for i, step in enumerate(spec.steps))
    ms = "toUnixTimestamp64Milli(occurred_at)"
    window = str(spec.window_ms)
    if spec.mode is FunnelMode.ANY:
        step = "multiIf(" + ", ".join(f"s{i}, {i}" for i in range(n)) + ", -1)"
        return (
            f"(SELECT site_id, person_id, g, uniqExactIf(step, ts <= opened + {window}) "
            "AS level, any(opened) AS entered FROM (SELECT site_id, person_id, ts, step, entry, "
            "min(ts) OVER (PARTITION BY site_id, person_id) AS opened, "
            "argMin(g0, ts) OVER (PARTITION BY site_id, person_id) AS g, "
            "argMin(entry, ts) OVER (PARTITION BY site_id, person_id) AS opened_by_entry FROM ("
            f"SELECT site_id, person_id, {ms} AS ts, {step} AS step, {group} AS g0, "
            f"({entry}) AS entry FROM (SELECT *, {steps} FROM {events} WHERE {where}"
            f") WHERE step >= 0)) WHERE opened >= {start} AND opened < {end} "
            "AND opened_by_entry GROUP BY site_id, person_id, g)"
        )
    strict = ", 'strict_order'" if spec.mode is FunnelMode.STRICT else ""
    later = "".join(f", s{i}" for i in range(1, n))
    scan = (
        f"SELECT site_id, person_id, {ms} AS ts, ({ms} >= {start} AND {ms} < {end} "
        f"AND ({entry})) AS entry, {group} AS g0, {steps} "
        f"FROM {events} WHERE {where} AND {ms} >= {start} AND {ms} < {end} + {window}"
    )
    if group == "''":  # one value: no need to find each person's values first
        return (
            f"(SELECT site_id, person_id, '' AS g, windowFunnel({window}{strict})("
            f"toUInt64(ts), s0 AND entry{later}) AS level, maxIf(ts, s0 AND entry) AS entered "
            f"FROM ({scan}) GROUP BY site_id, person_id)"
        )
    # Each person's events once per breakdown value of their entries (a join, not a window
    # over the events sorted by person: several times faster, benchmarks/bench_reports.py).
    return (
        f"(SELECT site_id, person_id, g, windowFunnel({window}{strict})("
        f"toUInt64(ts), s0 AND entry AND g0 = g{later}) AS level, "
        "maxIf(ts, s0 AND entry AND g0 = g) AS entered "
        f"FROM ({scan}) AS e INNER JOIN (SELECT site_id, person_id, g0 AS g FROM ({scan}) "
        "WHERE s0 AND entry GROUP BY site_id, person_id, g) AS v "
        "ON e.site_id = v.site_id AND e.person_id = v.person_id "
        "GROUP BY site_id, person_id, g)"
    )


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


def stage_rows(
    db: str,
    scope: ReportScope,
    params: dict[str, object] | None = None,
    where: tuple[Condition, ...] = (),
    funnel: Funnel | None = None,
) -> str:
    """``stage_reached`` rows of the funnel in scope with the breakdown value ``g``.

    A touch breakdown, or conditions on the entry event (``where``), read the event that
    started each row's chain (``entered_at``: an event that can enter ``funnel``, at that
    time) from ``events``; they bind their values in ``params``."""
    if scope.by in ("temperature", "manager"):
        assert scope.by is not None
        if where:
            raise ValueError("conditions on the entry event go with a touch or time breakdown")
        return (
            f"(SELECT s.*, ifNull(p.g, '(unknown)') AS g FROM {db}.stage_reached AS s "
            f"LEFT JOIN {person_groups(db, scope.by)} AS p "
            "ON s.site_id = p.site_id AND s.person_id = p.person_id "
            f"WHERE s.funnel = {{funnel:String}} AND {scope.site_filter('s.')} "
            f"AND {scope.period_filter('s.entered_at')} SETTINGS join_use_nulls = 1)"
        )
    touch = scope.by_touch
    if touch or where:
        assert params is not None, "a touch breakdown or conditions bind parameters"
        value = scope.touch_group(params)
        conditions = all_of(where, params)
        group = (
            "e.g" if touch else _group(scope, "s.entered_at", "s.entry_channel", "s.entry_campaign")
        )
        entry = entry_sql(as_query(funnel), params) if funnel is not None else "1"
        return (
            f"(SELECT s.*, {group} AS g FROM {db}.stage_reached AS s INNER JOIN ("
            f"SELECT site_id, person_id, occurred_at, any({value}) AS g "
            f"FROM {resolved_events(db, include_bots=scope.include_bots)} "
            f"WHERE {scope.site_filter()} AND {conditions} AND ({entry}) "
            "GROUP BY site_id, person_id, occurred_at) AS e "
            "ON s.site_id = e.site_id AND s.person_id = e.person_id "
            "AND s.entered_at = e.occurred_at "
            f"WHERE s.funnel = {{funnel:String}} AND {scope.site_filter('s.')} "
            f"AND {scope.period_filter('s.entered_at')})"
        )
    group = _group(scope, "entered_at", "entry_channel", "entry_campaign")
    return (
        f"(SELECT *, {group} AS g FROM {db}.stage_reached WHERE funnel = {{funnel:String}} "
        f"AND {scope.site_filter()} AND {scope.period_filter('entered_at')})"
    )


def _stopped(
    store: Store, spec: FunnelQuery, scope: ReportScope
) -> dict[str, dict[int, tuple[int, int]]]:
    """Breakdown value → furthest step → (still in window, dropped) persons."""
    params: dict[str, object] = {}
    sql = (
        "SELECT g, level, countIf(status = 'in_window') AS in_window, "
        "countIf(status = 'dropped') AS dropped "
        f"FROM {person_status_sql(store.database, spec, scope, params)} GROUP BY g, level"
    )
    out: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    for row in store.query(sql, params):
        out[str(row["g"])][int(row["level"])] = (int(row["in_window"]), int(row["dropped"]))
    return dict(out)


def person_status_sql(
    db: str, spec: FunnelQuery, scope: ReportScope, params: dict[str, object]
) -> str:
    """``(site_id, person_id, g, level, status)``: each person of the funnel in ``scope``
    with their furthest step and ``converted``, ``in_window`` or ``dropped`` (``''``: the
    stream holds no status for them yet). Fills ``params``.

    A configured funnel reads each person's status from the stream (``persons``). A funnel
    asked at query time has none: a person short of the last step is still in window while
    their latest entry's window is open at the time of the query."""
    params.update({**scope.params(), "funnel": spec.name})
    chains = needs_chains(scope, spec)
    steps = len(spec.steps)
    if chains:
        reached = f"(SELECT * FROM {levels_sql(db, spec, scope, params)} WHERE level > 0)"
    else:
        reached = (
            "(SELECT site_id, person_id, max(step_index) AS level, argMin(g, step_index) AS g "
            "FROM (SELECT site_id, person_id, step_index, g, sum(sign) AS net "
            f"FROM {stage_rows(db, scope)} GROUP BY site_id, person_id, step_index, g "
            "HAVING net > 0) GROUP BY site_id, person_id)"
        )
    if not spec.configured:
        open_ = f"entered + {spec.window_ms} >= toUnixTimestamp64Milli(now64(3))"
        return (
            "(SELECT site_id, person_id, g, level, "
            f"multiIf(level >= {steps}, 'converted', {open_}, 'in_window', 'dropped') AS status "
            f"FROM {reached})"
        )
    # From chains, a person's furthest step in a period (or under an entry touch) can be
    # short of their furthest overall: they stopped there unless they are still in window.
    dropped = "stream != 'in_window'" if chains else "stream = 'dropped'"
    # Only the funnel's status is taken out of the persons' map before argMax: carrying
    # whole maps through the aggregation costs several times more.
    return (
        "(SELECT r.site_id AS site_id, r.person_id AS person_id, r.g AS g, r.level AS level, "
        f"multiIf(r.level >= {steps}, 'converted', p.stream = 'in_window', 'in_window', "
        f"{dropped}, 'dropped', '') AS status FROM {reached} AS r "
        "INNER JOIN (SELECT site_id, person_id, "
        "argMax(funnel_status[{funnel:String}], updated_at) AS stream, "
        f"argMax(merged_into, updated_at) AS merged FROM {db}.persons "
        f"WHERE {scope.site_filter()} GROUP BY site_id, person_id HAVING merged = ''"
        ") AS p ON r.site_id = p.site_id AND r.person_id = p.person_id)"
    )


def stage_counts(store: Store, spec: FunnelSpec, site_id: str | None = None) -> list[int]:
    """Distinct persons who reached each step of ``spec`` (step 1 first), from the raw
    ``stage_reached`` rows (corrections netted out)."""
    counts = step_counts(store, spec, ReportScope(site=site_id), source="raw").get("", {})
    return [counts.get(i, 0) for i in range(1, len(spec.steps) + 1)]


def raw_levels(store: Store, spec: FunnelSpec, site_id: str | None = None) -> dict[str, int]:
    """Funnel level per person computed by ClickHouse over the raw ``events``.

    Ordered and strict funnels use ``windowFunnel`` (``'strict_order'`` for strict); an
    any-order funnel counts the steps reached within the window that opens with the person's
    first step event. This answers ad-hoc funnels straight from ``events`` and is the oracle
    the streaming levels are tested against.
    """
    params: dict[str, object] = {"site": site_id or "", "window": spec.window_ms}
    query = FunnelQuery.of(spec)
    conditions = [step.sql(params, f"t{i}") for i, step in enumerate(query.steps)]
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
