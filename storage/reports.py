"""Report queries: SQL over the stored facts, arithmetic in the pure core (:mod:`funnel.report`)."""

from __future__ import annotations

from funnel.funnels import FunnelSpec
from funnel.report import FunnelReport
from storage.backends import Store

__all__ = ["funnel_report", "stage_counts"]


def stage_counts(store: Store, spec: FunnelSpec, site_id: str | None = None) -> list[int]:
    """Distinct persons who reached each step of ``spec`` (step 1 first)."""
    rows = store.query(
        f"SELECT step_index, uniqExact(person_id) AS persons FROM {store.database}.stage_reached "
        "WHERE funnel = {funnel:String} AND ({site:String} = '' OR site_id = {site:String}) "
        "GROUP BY step_index ORDER BY step_index",
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
    """Ordered-funnel level per person computed by ClickHouse ``windowFunnel`` on raw events.

    This answers ad-hoc funnels straight from ``events`` and is the oracle the streaming
    levels are tested against.
    """
    params: dict[str, object] = {"site": site_id or "", "window": spec.window_ms}
    conditions = ", ".join(_step_condition(spec, i, params) for i in range(len(spec.steps)))
    rows = store.query(
        "SELECT person_id, windowFunnel({window:UInt64})"
        f"(toUInt64(toUnixTimestamp64Milli(occurred_at)), {conditions}) AS level "
        f"FROM {store.database}.events "
        "WHERE {site:String} = '' OR site_id = {site:String} GROUP BY person_id",
        params,
    )
    return {str(r["person_id"]): int(r["level"]) for r in rows}
