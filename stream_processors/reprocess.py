"""Re-deriving the facts of stored events with the current rules (``funnel reprocess``).

Channel rules, funnels and lead rules are configured data: a change applies to the events
that arrive after it. :func:`reprocess` applies it to the history too. For each site asked
for, in the embedded store:

1. what the runner had not landed yet lands (its outbox), so nothing old comes after;
2. the site's events are read back as the core read them (``events.raw``), in the order
   they were received;
3. every row derived from them goes: the site's events rows (their classification is
   derived too), ``stage_reached``, ``attributions``, ``persons``, ``lead_changes`` and the
   site's rows of the aggregates; the runner forgets the site's persons, links and applied
   ids;
4. the events go through the same runtime as the stream (:class:`EmbeddedPipeline`), with
   the status timer at the end, and everything derived lands again through the same inserts
   (the aggregates refill through their views).

Dead letters, replay marks, erasures and spend are not derived from events and stay.
Running it twice gives the same tables. No reader sees it half done: the embedded store
belongs to one process, so ``funnel serve`` is stopped meanwhile and its senders retry (the
tracker and the SDK do); events they send after it starts again are processed on top of the
reprocessed state, exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from funnel.events import Event
from funnel.identity import customer_key, device_key
from funnel.processor import CoreConfig
from storage.backends import Store
from storage.forget import Subject, bound_in, remove_rows
from stream_processors.embedded import EmbeddedPipeline
from stream_processors.state import SavedState

__all__ = ["DERIVED", "Reprocessed", "reprocess"]

#: The tables whose rows are derived from events (the events rows too: their channel is).
DERIVED = ("events", "stage_reached", "attributions", "persons", "lead_changes")
AGGREGATES = (
    "agg_stage_minute",
    "agg_stage_hour",
    "agg_stage_day",
    "agg_events_minute",
    "agg_attribution_day",
)
_CHUNK = 20_000


@dataclass(slots=True)
class Reprocessed:
    """What a reprocess did."""

    sites: list[str]
    events: int = 0
    rows_before: int = 0
    """Rows of the derived tables before (the events' own included)."""
    rows_after: int = 0


def reprocess(
    store: Store,
    saved: SavedState,
    config: CoreConfig,
    sites: Sequence[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    on_events: Callable[[int], None] | None = None,
) -> Reprocessed:
    """Re-derive every fact of ``sites`` from their stored events (module docstring).

    With ``start``/``end``, only the persons with an event in ``[start, end)`` are re-derived,
    whole (every event of theirs, before and after, and those of the devices linked to them):
    a person's facts depend on their whole history. ``on_events`` is told of each chunk of
    events processed (a progress bar)."""
    db = store.database
    result = Reprocessed(list(sites))
    pipeline = EmbeddedPipeline(store, config, saved=saved)
    whole = start is None and end is None
    try:
        pipeline.flush()  # the outbox lands first: nothing old lands after the new
        for site in sites:
            params: dict[str, object] = {"site": site}
            persons = None if whole else _persons_in(store, site, start, end)
            if persons is not None and not persons:
                continue
            where, bound = ("1", {}) if persons is None else bound_in("person_id", persons, "p")
            params.update(bound)
            result.rows_before += _count(store, site, where, params)
            # Read whole, before anything is deleted (a crash leaves the events in place).
            rows = store.query(
                f"SELECT event_id, raw FROM {db}.events WHERE site_id = {{site:String}} "
                f"AND {where} ORDER BY received_at, occurred_at, event_id",
                params,
            )
            raw = [str(r["raw"]) for r in rows]
            if any(not text for text in raw):
                raise ValueError(
                    f"site {site!r} has events stored before migration 0013 kept them whole: "
                    "they cannot be re-derived"
                )
            if persons is None:
                for table in (*DERIVED, *AGGREGATES):
                    store.execute(
                        f"DELETE FROM {db}.{table} WHERE site_id = {{site:String}}", params
                    )
                saved.clear_site(site)
            else:
                remove_rows(
                    store, Subject(site, persons, frozenset(), frozenset()), dead_letters=False
                )
                saved.forget(
                    {customer_key(site, p) for p in persons}
                    | {device_key(site, p) for p in persons}
                )
                saved.forget_applied(f"{site}:{r['event_id']}" for r in rows)
            for start_at in range(0, len(raw), _CHUNK):
                chunk = [Event.model_validate_json(t) for t in raw[start_at : start_at + _CHUNK]]
                pipeline.submit_all(chunk)
                result.events += len(chunk)
                if on_events is not None:
                    on_events(len(chunk))
        pipeline.expire()  # the status timer: windows that expired by now have dropped
        pipeline.flush()
    finally:
        pipeline.close()
    result.rows_after = sum(_count(store, site, "1", {"site": site}) for site in sites)
    return result


def _persons_in(
    store: Store, site: str, start: datetime | None, end: datetime | None
) -> frozenset[str]:
    """The persons with an event in ``[start, end)``, with everyone linked to them: the
    customer a device was merged into, and every device merged into such a customer."""
    db = store.database
    params: dict[str, object] = {
        "site": site,
        "start": int(start.timestamp() * 1000) if start else 0,
        "end": int(end.timestamp() * 1000) if end else 2**62,
    }
    active = {
        str(r["person_id"])
        for r in store.query(
            f"SELECT DISTINCT person_id FROM {db}.events WHERE site_id = {{site:String}} "
            "AND toUnixTimestamp64Milli(occurred_at) >= {start:Int64} "
            "AND toUnixTimestamp64Milli(occurred_at) < {end:Int64}",
            params,
        )
    }
    merged = {
        str(r["person_id"]): str(r["into"])
        for r in store.query(
            f"SELECT person_id, argMax(merged_into, updated_at) AS into FROM {db}.persons "
            "WHERE site_id = {site:String} GROUP BY person_id",
            params,
        )
    }
    roots = {merged.get(p) or p for p in active}
    return frozenset(roots | {p for p, into in merged.items() if into in roots})


def _count(store: Store, site: str, where: str, params: dict[str, object]) -> int:
    total = 0
    for table in DERIVED:
        rows = store.query(
            f"SELECT count() AS n FROM {store.database}.{table} "
            f"WHERE site_id = {{site:String}} AND {where}",
            params,
        )
        total += int(rows[0]["n"])
    return total
