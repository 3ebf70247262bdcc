"""The sites of a store: what each one holds (``funnel sites``, ``/api/reports/sites``).

A site is a ``site_id`` with stored events. Per site: the configured funnels someone has
reached a step of (``stage_reached``, corrections netted out), the first and last event
time, and the events stored, of which flagged as bots' (``events.is_bot``: kept, left out
of the reports unless asked for). :func:`site_ids` is the cheap check the report catalog
makes before answering for one site.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from funnel.funnels import FunnelCatalog
from funnel.report import Table
from storage.backends import Store

__all__ = ["has_site", "site_ids", "sites_report"]


def site_ids(store: Store) -> list[str]:
    """Every site with stored events, sorted (scans the ``site_id`` column of ``events``)."""
    rows = store.query(f"SELECT DISTINCT site_id FROM {store.database}.events ORDER BY site_id")
    return [str(r["site_id"]) for r in rows]


def has_site(store: Store, site: str) -> bool:
    """Whether ``site`` has stored events (reads one row: ``events`` is ordered by site)."""
    rows = store.query(
        f"SELECT 1 AS found FROM {store.database}.events WHERE site_id = {{site:String}} LIMIT 1",
        {"site": site},
    )
    return bool(rows)


def sites_report(store: Store, funnels: FunnelCatalog) -> Table:
    """One row per site: its funnels with data, first and last event, events and bots'."""
    db = store.database
    reached: dict[str, set[str]] = defaultdict(set)
    for r in store.query(
        f"SELECT site_id, funnel FROM {db}.stage_reached GROUP BY site_id, funnel "
        "HAVING sum(sign) > 0"
    ):
        reached[str(r["site_id"])].add(str(r["funnel"]))
    configured = [f.name for f in funnels.specs]
    rows = []
    for r in store.query(
        "SELECT site_id, min(occurred_at) AS first, max(occurred_at) AS last, "
        f"count() AS events, countIf(is_bot) AS bot_events FROM {db}.events "
        "GROUP BY site_id ORDER BY site_id"
    ):
        site = str(r["site_id"])
        rows.append(
            (
                site,
                ", ".join(name for name in configured if name in reached[site]),
                _iso(r["first"]),
                _iso(r["last"]),
                int(r["events"]),
                int(r["bot_events"]),
            )
        )
    return Table(
        title="Sites",
        columns=("site", "funnels", "first_event", "last_event", "events", "bot_events"),
        rows=tuple(rows),
    )


def _iso(moment: object) -> str:
    """A stored time as ISO 8601 in UTC with milliseconds (a backend gives a datetime or
    ClickHouse's text of one, which is UTC: the column's zone)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromisoformat(str(moment))
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds")
