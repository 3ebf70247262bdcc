"""Variables and SQL fragments shared by the ClickHouse dashboards.

Every query names its tables ``${db}.<table>``: ``db`` is a hidden constant (``funnel``, the
pipeline's default database), so a deployment with another database changes one value.
String variables are always written ``${name:singlequote}`` (quoted and escaped by Grafana),
never pasted between quotes by hand. ``channel`` and ``campaign`` are multi-value with *All*;
their filters use the plugin's ``$__conditionalAll``, which drops the condition when *All* is
selected, so rows with an empty campaign (direct and organic traffic) are kept then.
"""

from __future__ import annotations

from funnel.funnels import FunnelCatalog

from .model import ConstantVariable, QueryVariable

__all__ = [
    "CAMPAIGN",
    "CHANNEL",
    "DB",
    "FUNNEL",
    "SITE",
    "campaign_filter",
    "channel_filter",
    "quote",
    "series_options",
    "stat_options",
    "step_names",
]

DB = ConstantVariable("db", "funnel")

SITE = QueryVariable(
    "site",
    "Site",
    "SELECT DISTINCT site_id FROM ${db}.agg_events_minute ORDER BY site_id",
)

FUNNEL = QueryVariable(
    "funnel",
    "Funnel",
    "SELECT DISTINCT funnel FROM ${db}.agg_stage_day WHERE site_id = ${site:singlequote} "
    "ORDER BY funnel",
    default="sales",
)

CHANNEL = QueryVariable(
    "channel",
    "Channel",
    "SELECT DISTINCT channel FROM ${db}.agg_events_minute "
    "WHERE site_id = ${site:singlequote} AND $__timeFilter(bucket) ORDER BY channel",
    multi=True,
    include_all=True,
    refresh=2,
)

CAMPAIGN = QueryVariable(
    "campaign",
    "Campaign",
    "SELECT DISTINCT campaign FROM ${db}.agg_events_minute "
    "WHERE site_id = ${site:singlequote} AND $__timeFilter(bucket) AND campaign != '' "
    "AND $__conditionalAll(channel IN (${channel:singlequote}), $channel) ORDER BY campaign",
    multi=True,
    include_all=True,
    refresh=2,
)


def channel_filter(column: str = "channel") -> str:
    """``column`` is one of the selected channels (no condition when *All* is selected)."""
    return f"$__conditionalAll({column} IN (${{channel:singlequote}}), $channel)"


def campaign_filter(column: str = "campaign") -> str:
    """``column`` is one of the selected campaigns (no condition when *All* is selected)."""
    return f"$__conditionalAll({column} IN (${{campaign:singlequote}}), $campaign)"


def step_names(catalog: FunnelCatalog) -> str:
    """A ClickHouse ``map`` from funnel name to its step names, in step order.

    The aggregates keep step indexes only; names come from the funnel configuration the
    dashboards were generated from (regenerate with ``--funnels`` for a custom catalog).
    """
    entries = ",\n        ".join(
        f"{quote(spec.name)}, [{', '.join(quote(step.name) for step in spec.steps)}]"
        for spec in sorted(catalog.specs, key=lambda s: s.name)
    )
    return f"map(\n        {entries}\n    )"


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stat_options() -> dict[str, object]:
    """A stat panel showing the last value of each numeric column."""
    return {
        "reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""},
        "colorMode": "value",
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
    }


def series_options() -> dict[str, object]:
    """A time series panel's legend below and a shared tooltip."""
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
