"""How long each table keeps its rows: ClickHouse TTLs, set by ``funnel migrate``.

Three settings, in days (``forever``: no TTL), from the environment or ``funnel migrate``'s
options:

========================  ===================================  ========================
setting                   tables (the time a row expires by)   default
========================  ===================================  ========================
``events``                ``events`` (``occurred_at``)         forever
``facts``                 ``stage_reached`` (``reached_at``),  forever
                          ``attributions`` (``converted_at``),
                          ``lead_changes`` (``changed_at``),
                          ``persons`` (``last_seen``)
``rejected``              ``rejected_events`` (``recorded_at``) 30
========================  ===================================  ========================

The raw events are the source every fact can be re-derived from (``funnel reprocess``), so
they are kept unless told otherwise; the dead letters hold raw payloads (personal data a
sender got wrong) and go after 30 days. The aggregates (``agg_*``) hold counts and sums per
bucket, no person: ``agg_stage_minute`` keeps 14 days (the live view), the others are kept
for good, so an all-time report still answers after the facts under it expired. A person's
row in ``persons`` expires with their last event, so a fact retention shorter than the
periods you report on empties the status split (converted / dropped / in window) of the
older ones.

ClickHouse deletes expired rows when it merges parts (or on ``OPTIMIZE … FINAL``), not at
the second they expire.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from storage.backends import Store
from storage.cluster import cluster_statements

__all__ = ["RETENTION_TABLES", "Retention", "apply_retention"]

#: Setting → the tables it governs and the time column each row expires by.
RETENTION_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (("events", "occurred_at"),),
    "facts": (
        ("stage_reached", "reached_at"),
        ("attributions", "converted_at"),
        ("lead_changes", "changed_at"),
        ("persons", "last_seen"),
    ),
    "rejected": (("rejected_events", "recorded_at"),),
}
_ENV = {name: f"FUNNEL_RETENTION_{name.upper()}_DAYS" for name in RETENTION_TABLES}
_MAX_DAYS = 36_500
_TTL = re.compile(r"\bTTL\b", re.I)


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each kind of row is kept (``None``: forever)."""

    events: int | None = None
    facts: int | None = None
    rejected: int | None = 30

    def __post_init__(self) -> None:
        for name in RETENTION_TABLES:
            days = getattr(self, name)
            if days is not None and not 1 <= days <= _MAX_DAYS:
                raise ValueError(f"{name} retention is 1 to {_MAX_DAYS} days or forever: {days}")

    @classmethod
    def parse(cls, values: Mapping[str, str | None]) -> Retention:
        """From text per setting (``"90"``, ``"forever"``; ``None``: the default). Raises
        ``ValueError`` naming the setting for anything else."""
        days: dict[str, int | None] = {}
        for name, text in values.items():
            if text is None:
                continue
            if name not in RETENTION_TABLES:
                raise ValueError(f"unknown retention {name!r}: one of {', '.join(_ENV)}")
            cleaned = text.strip().lower()
            if cleaned in ("forever", "0", "none"):
                days[name] = None
            elif cleaned.isdigit() and 1 <= int(cleaned) <= _MAX_DAYS:
                days[name] = int(cleaned)
            else:
                raise ValueError(
                    f"{name} retention is a number of days (1 to {_MAX_DAYS}) or 'forever', "
                    f"not {text!r}"
                )
        return cls(**days)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Retention:
        """From ``FUNNEL_RETENTION_EVENTS_DAYS``, ``…_FACTS_DAYS``, ``…_REJECTED_DAYS``."""
        environ = os.environ if environ is None else environ
        try:
            return cls.parse({name: environ.get(var) for name, var in _ENV.items()})
        except ValueError as exc:
            raise ValueError(f"{exc} (from {', '.join(_ENV.values())})") from None

    def statements(self, database: str, current: Mapping[str, bool]) -> list[str]:
        """The ALTERs that bring each table to this retention; ``current`` says which tables
        have a TTL now (a table without one needs no REMOVE)."""
        out = []
        for name, tables in RETENTION_TABLES.items():
            days = getattr(self, name)
            for table, column in tables:
                if days is not None:
                    out.append(
                        f"ALTER TABLE {database}.{table} MODIFY TTL "
                        f"toDateTime({column}) + INTERVAL {days} DAY"
                    )
                elif current.get(table):
                    out.append(f"ALTER TABLE {database}.{table} REMOVE TTL")
        return out

    def describe(self) -> dict[str, str]:
        return {
            name: "forever" if getattr(self, name) is None else f"{getattr(self, name)} days"
            for name in RETENTION_TABLES
        }


def apply_retention(
    store: Store,
    retention: Retention,
    cluster: str | None = None,
    *,
    execute: Callable[[str], None] | None = None,
) -> list[str]:
    """Set every governed table's TTL to ``retention``; returns the statements run."""
    db = store.database
    tables = [table for group in RETENTION_TABLES.values() for table, _ in group]
    wanted = {t if cluster is None else f"{t}_local" for t in tables}
    current = {
        str(row["name"]): bool(_TTL.search(str(row["engine_full"])))
        for row in store.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
            {"db": db},
        )
        if str(row["name"]) in wanted
    }
    if cluster is not None:
        current = {name.removesuffix("_local"): has for name, has in current.items()}
    statements = retention.statements(db, current)
    if cluster is not None:
        statements = cluster_statements(statements, db, cluster)
    run = execute or store.execute
    for statement in statements:
        run(statement)
    return statements
