"""Report queries: SQL over the stored facts, arithmetic in the pure core (:mod:`funnel.report`)."""

from __future__ import annotations

from funnel.funnels import FunnelMode, FunnelSpec
from funnel.report import FunnelReport
from storage.backends import Store

__all__ = ["funnel_report", "stage_counts"]


def stage_counts(store: Store, spec: FunnelSpec, site_id: str | None = None) -> list[int]:
    """Distinct persons who reached each step of ``spec`` (step 1 first), corrections
    (``sign = -1`` rows) netted out."""
    rows = store.query(
        "SELECT step_index, countIf(net > 0) AS persons FROM ("
        f"SELECT person_id, step_index, sum(sign) AS net FROM {store.database}.stage_reached "
        "WHERE funnel = {funnel:String} AND ({site:String} = '' OR site_id = {site:String}) "
        "GROUP BY person_id, step_index) GROUP BY step_index ORDER BY step_index",
        {"funnel": spec.name, "site": site_id or ""},
    )
    by_index = {int(r["step_index"]): int(r["persons"]) for r in rows}
    return [by_index.get(i, 0) for i in range(1, len(spec.steps) + 1)]


def funnel_report(store: Store, spec: FunnelSpec, site_id: str | None = None) -> FunnelReport:
    """Step counts, step and overall conversion and ``1:N`` for one funnel."""
    counts = stage_counts(store, spec, site_id)
    return FunnelReport.from_counts(spec.name, site_id, [s.name for s in spec.steps], counts)


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
    db = store.database
    # Events keep the person id they had when they arrived; a device's anonymous person that
    # was merged into a customer is mapped to it through persons.merged_into.
    events = (
        f"(SELECT e.* EXCEPT person_id, if(m.merged_into != '', m.merged_into, e.person_id) "
        f"AS person_id FROM {db}.events AS e LEFT JOIN (SELECT site_id, person_id, "
        f"max(merged_into) AS merged_into FROM {db}.persons GROUP BY site_id, person_id) AS m "
        "ON e.site_id = m.site_id AND e.person_id = m.person_id)"
    )
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
