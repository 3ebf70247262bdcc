"""Erasing a person: every row that names them, and their part of the aggregates.

:func:`find_subject` turns ``--customer ID`` or ``--anonymous ID`` (of one site) into the
person and every device linked to them: a customer's person, the device persons merged into
it, and their anonymous ids; a device merged into a customer stands for that customer (the
person is the customer, with all their devices).

:func:`erase` then, in the store:

1. deletes the subject's rows from every table that names a person (``events``,
   ``stage_reached``, ``attributions``, ``persons``, ``lead_changes``), the dead letters whose
   payload names one of their ids, and the replay marks of their events;
2. rebuilds the buckets of the aggregates (``agg_*``) those rows fell in, from what remains
   (each aggregate's own materialized-view query), so every report reads as if the person had
   never existed;
3. records the erasure in ``erasures``: who asked, when, how many rows from which tables, and
   nothing of the erased data.

The embedded runner's state of the person (``SavedState.forget``) is the caller's to drop;
``funnel forget`` does both, after landing what the runner had not landed yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from storage.backends import Store

__all__ = ["Erasure", "Subject", "bound_in", "erase", "find_subject", "remove_rows"]

#: Tables whose rows name a person by ``person_id``.
PERSON_TABLES = ("events", "stage_reached", "attributions", "persons", "lead_changes")
#: Aggregate → (its materialized view, the bucket of a row of the view's source table).
AGGREGATES = {
    "agg_stage_minute": ("mv_stage_minute", "stage_reached", "toStartOfMinute(entered_at)"),
    "agg_stage_hour": ("mv_stage_hour", "stage_reached", "toStartOfHour(entered_at)"),
    "agg_stage_day": ("mv_stage_day", "stage_reached", "toDate(entered_at)"),
    "agg_events_minute": ("mv_events_minute", "events", "toStartOfMinute(occurred_at)"),
    "agg_attribution_day": ("mv_attribution_day", "attributions", "toDate(converted_at)"),
}


class NoSuchPerson(LookupError):
    """Nothing in the store names the person asked for."""


@dataclass(frozen=True, slots=True)
class Subject:
    """A person to erase, with every id that names them in one site."""

    site_id: str
    person_ids: frozenset[str]
    anonymous_ids: frozenset[str]
    customer_ids: frozenset[str]


@dataclass(slots=True)
class Erasure:
    """What an erasure removed (counts only)."""

    rows: dict[str, int] = field(default_factory=dict)
    buckets: int = 0

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def find_subject(
    store: Store, site_id: str, *, customer: str | None = None, anonymous: str | None = None
) -> Subject:
    """The person named by ``customer`` or ``anonymous`` in ``site_id``, with their devices."""
    if (customer is None) == (anonymous is None):
        raise ValueError("name the person by a customer id or an anonymous id (one of them)")
    db = store.database
    params: dict[str, object] = {"site": site_id}
    if anonymous is not None:
        params["anonymous"] = anonymous
        rows = store.query(
            f"SELECT DISTINCT person_id, customer_id FROM {db}.events "
            "WHERE site_id = {site:String} AND anonymous_id = {anonymous:String}",
            params,
        )
        merged = store.query(
            f"SELECT argMax(merged_into, updated_at) AS into FROM {db}.persons "
            "WHERE site_id = {site:String} AND person_id = {anonymous:String}",
            params,
        )
        into = str(merged[0]["into"]) if merged else ""
        customers = {str(r["customer_id"]) for r in rows if r["customer_id"]}
        if into:
            customers.add(into)
        if not rows and not into:
            raise NoSuchPerson(f"no events of anonymous id {anonymous!r} in site {site_id!r}")
        if not customers:
            return Subject(site_id, frozenset({anonymous}), frozenset({anonymous}), frozenset())
        customer = sorted(customers)[0]
    assert customer is not None
    params["customer"] = customer
    devices = {
        str(r["person_id"])
        for r in store.query(
            f"SELECT person_id, argMax(merged_into, updated_at) AS into FROM {db}.persons "
            "WHERE site_id = {site:String} GROUP BY person_id HAVING into = {customer:String}",
            params,
        )
    }
    persons = {customer, *devices}
    where, bound = bound_in("person_id", persons, "p")
    anonymous_ids = {
        str(r["anonymous_id"])
        for r in store.query(
            f"SELECT DISTINCT anonymous_id FROM {db}.events WHERE site_id = {{site:String}} "
            f"AND (customer_id = {{customer:String}} OR {where}) AND anonymous_id != ''",
            {**params, **bound},
        )
    }
    named = store.query(
        f"SELECT count() AS n FROM {db}.events WHERE site_id = {{site:String}} "
        f"AND (customer_id = {{customer:String}} OR {where})",
        {**params, **bound},
    )
    if not int(named[0]["n"]) and not devices:
        raise NoSuchPerson(f"no events of customer {customer!r} in site {site_id!r}")
    return Subject(
        site_id,
        frozenset(persons),
        frozenset(anonymous_ids | devices),
        frozenset({customer}),
    )


def erase(
    store: Store,
    subject: Subject,
    *,
    requested_by: str,
    at: datetime,
    state: dict[str, int] | None = None,
) -> Erasure:
    """Delete the subject's rows, rebuild the aggregates under them, record the erasure
    (with ``state``: what was erased elsewhere, by kind, e.g. the stream's person states)."""
    erasure = remove_rows(store, subject, dead_letters=True)
    store.insert(
        "erasures",
        [
            {
                "site_id": subject.site_id,
                "requested_by": requested_by,
                "requested_at": at,
                "rows": erasure.total,
                "tables": {k: v for k, v in {**erasure.rows, **(state or {})}.items() if v},
            }
        ],
    )
    return erasure


def remove_rows(store: Store, subject: Subject, *, dead_letters: bool) -> Erasure:
    """Delete every row naming the subject in the tables that name persons (and, with
    ``dead_letters``, the dead letters and replay marks naming them), then rebuild the
    aggregate buckets those rows fell in from what remains. ``funnel reprocess`` uses it
    before it derives the subject's rows again."""
    db = store.database
    params: dict[str, object] = {"site": subject.site_id}
    persons, bound = bound_in("person_id", subject.person_ids, "p")
    params.update(bound)
    ids = sorted(subject.anonymous_ids | subject.customer_ids)
    named, bound = bound_in("anonymous_id", subject.anonymous_ids, "a")
    params.update(bound)
    customers, bound = bound_in("customer_id", subject.customer_ids, "c")
    params.update(bound)
    where = {
        "events": f"({persons} OR {named} OR {customers})",
        "stage_reached": persons,
        "attributions": persons,
        "persons": f"({persons} OR {bound_in('merged_into', subject.person_ids, 'p')[0]})",
        "lead_changes": f"({persons} OR {customers})",
    }
    # The buckets of the aggregates the subject's rows fall in, before they go.
    buckets: dict[str, list[str]] = {}
    for aggregate, (_, source, bucket) in AGGREGATES.items():
        rows = store.query(
            f"SELECT DISTINCT toString({bucket}) AS b FROM {db}.{source} "
            f"WHERE site_id = {{site:String}} AND {where[source]}",
            params,
        )
        buckets[aggregate] = [str(r["b"]) for r in rows]
    event_ids = [
        str(r["event_id"])
        for r in store.query(
            f"SELECT event_id FROM {db}.events WHERE site_id = {{site:String}} "
            f"AND {where['events']}",
            params,
        )
    ]
    erasure = Erasure()
    for table, condition in where.items():
        erasure.rows[table] = _delete(
            store, table, f"site_id = {{site:String}} AND {condition}", params
        )
    if not dead_letters:
        ids = []
    mentions = " OR ".join(f"position(payload, {{i{n}:String}}) > 0" for n in range(len(ids)))
    params.update({f"i{n}": text for n, text in enumerate(ids)})
    if dead_letters:
        erasure.rows["rejected_events"] = _delete(
            store, "rejected_events", f"site_id = {{site:String}} AND ({mentions or '0'})", params
        )
    if event_ids and dead_letters:
        replayed, bound = _in_array("event_ids", event_ids, "e")
        erasure.rows["dead_letter_replays"] = _delete(
            store,
            "dead_letter_replays",
            f"site_id = {{site:String}} AND {replayed}",
            {**params, **bound},
        )
    for aggregate, values in buckets.items():
        erasure.buckets += len(values)
        _rebuild(store, aggregate, subject.site_id, values)
    return erasure


def _delete(store: Store, table: str, where: str, params: dict[str, object]) -> int:
    db = store.database
    found = store.query(f"SELECT count() AS n FROM {db}.{table} WHERE {where}", params)
    count = int(found[0]["n"])
    if count:
        store.execute(f"DELETE FROM {db}.{table} WHERE {where}", params)
    return count


def _rebuild(store: Store, aggregate: str, site_id: str, buckets: Sequence[str]) -> None:
    """Recompute ``aggregate``'s rows of these buckets from its source table, as its view
    would have written them had the erased rows never been inserted."""
    if not buckets:
        return
    db = store.database
    view, _, _ = AGGREGATES[aggregate]
    found = store.query(
        "SELECT as_select FROM system.tables WHERE database = {db:String} AND name = {v:String}",
        {"db": db, "v": view},
    )
    select = str(found[0]["as_select"])
    params: dict[str, object] = {"site": site_id}
    chosen, bound = bound_in("toString(bucket)", buckets, "b")
    params.update(bound)
    where = f"site_id = {{site:String}} AND {chosen}"
    store.execute(f"DELETE FROM {db}.{aggregate} WHERE {where}", params)
    # insert_deduplicate = 0: the rebuilt block may equal one inserted before, and must land.
    store.execute(
        f"INSERT INTO {db}.{aggregate} SETTINGS insert_deduplicate = 0 "
        f"SELECT * FROM ({select}) WHERE {where}",
        params,
    )


def bound_in(column: str, values: Iterable[str], prefix: str) -> tuple[str, dict[str, object]]:
    """``column IN (…)`` with every value a bound parameter (``0`` for none)."""
    items = sorted(values)
    if not items:
        return "0", {}
    names = [f"{prefix}{n}" for n in range(len(items))]
    sql = f"{column} IN ({', '.join(f'{{{name}:String}}' for name in names)})"
    return sql, dict(zip(names, items, strict=True))


def _in_array(column: str, values: Iterable[str], prefix: str) -> tuple[str, dict[str, object]]:
    """Whether the array ``column`` holds any of ``values`` (bound parameters)."""
    items = sorted(values)
    names = [f"{prefix}{n}" for n in range(len(items))]
    sql = " OR ".join(f"has({column}, {{{name}:String}})" for name in names) or "0"
    return f"({sql})", dict(zip(names, items, strict=True))
