"""Dead letters after a fix: list them by reason, send them through intake again.

Every refused item is a ``rejected_events`` row: its site, when it was received, its reasons
(``[{"field", "reason", "code"}, ...]``) and its payload. :func:`dead_letter_table` groups
them by site, reason code and field, with how many were replayed since. :func:`replay` takes
the letters not replayed yet (optionally of one reason code, since a time, of one site) and
sends each payload through intake again, as received then (the same site and receive time,
so clock corrections and the event's identity are the same), into the embedded pipeline:

* what intake now accepts lands (exactly once: an event id the store's state has applied is a
  duplicate, so a replay after a crash counts nothing twice), and its letter is marked in
  ``dead_letter_replays`` once the pipeline flushed it, never to be replayed again;
* what still fails stays as it was (no new dead letter is written for it), counted by its
  new reason;
* rows the store itself refused (``store_refused``: the event was taken, a row of it was not
  stored) are not intake's to replay and are left alone.

A letter's key is the SHA-256 of its site, receive time and payload (computed by the store,
so listing and replaying agree).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from funnel.intake import take_batch
from funnel.report import Table
from storage.backends import Store
from stream_processors.embedded import EmbeddedPipeline

__all__ = ["ReplayResult", "dead_letter_table", "replay"]

STORE_REFUSED = "store_refused"
_KEY = "hex(SHA256(concat(site_id, '|', toString(received_at), '|', payload)))"
_CODE = "JSONExtractString(reason, 1, 'code')"
_FIELD = "JSONExtractString(reason, 1, 'field')"


@dataclass(slots=True)
class ReplayResult:
    """What a replay did."""

    landed: int = 0
    """Letters whose events intake accepted and the pipeline stored (or had already)."""
    events: int = 0
    """Events applied now (a letter's event already applied is not counted again)."""
    still_failing: Counter[str] = field(default_factory=Counter)
    """Letters intake refuses again, by the reason code they fail with now."""
    skipped_store_refused: int = 0


def _filters(
    site: str | None, reason: str | None, since: datetime | None
) -> tuple[str, dict[str, object]]:
    where = ["1"]
    params: dict[str, object] = {}
    if site:
        where.append("site_id = {site:String}")
        params["site"] = site
    if reason:
        where.append(f"{_CODE} = {{reason:String}}")
        params["reason"] = reason
    if since is not None:
        where.append("received_at >= {since:DateTime64(3)}")
        params["since"] = since.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return " AND ".join(where), params


def dead_letter_table(
    store: Store,
    *,
    site: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
) -> Table:
    """Dead letters by site, reason code and field: how many, when, and how many replayed."""
    db = store.database
    where, params = _filters(site, reason, since)
    sql = (
        f"SELECT site_id, {_CODE} AS code, {_FIELD} AS field, count() AS letters, "
        f"countIf({_KEY} IN (SELECT letter_key FROM {db}.dead_letter_replays)) AS replayed, "
        "min(received_at) AS first, max(received_at) AS last "
        f"FROM {db}.rejected_events WHERE {where} "
        "GROUP BY site_id, code, field ORDER BY letters DESC, site_id, code, field"
    )
    rows = tuple(
        (
            str(r["site_id"]),
            str(r["code"]),
            str(r["field"]),
            int(r["letters"]),
            int(r["replayed"]),
            str(r["first"]),
            str(r["last"]),
        )
        for r in store.query(sql, params)
    )
    return Table(
        title="Dead letters",
        columns=("site_id", "reason", "field", "letters", "replayed", "first", "last"),
        rows=rows,
    )


def replay(
    store: Store,
    pipeline: EmbeddedPipeline,
    *,
    site: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    replayed_at: datetime,
) -> ReplayResult:
    """Send the letters not replayed yet through intake into ``pipeline`` (module docstring)."""
    db = store.database
    where, params = _filters(site, reason, since)
    letters = store.query(
        f"SELECT {_KEY} AS letter_key, site_id, received_at, {_CODE} AS code, payload "
        f"FROM {db}.rejected_events WHERE {where} "
        f"AND {_KEY} NOT IN (SELECT letter_key FROM {db}.dead_letter_replays) "
        "ORDER BY received_at",
        params,
    )
    result = ReplayResult()
    marks: dict[str, dict[str, object]] = {}
    for letter in letters:
        if letter["code"] == STORE_REFUSED:
            result.skipped_store_refused += 1
            continue
        key, site_id = str(letter["letter_key"]), str(letter["site_id"])
        try:
            item = json.loads(str(letter["payload"]))
        except ValueError:
            result.still_failing["invalid_json"] += 1
            continue
        received = letter["received_at"]
        intake = take_batch([item], site_id=site_id, received_at=_aware(received))
        if intake.rejected:
            result.still_failing[intake.rejected[0].reason] += 1
            continue
        result.events += sum(pipeline.submit(event) for event in intake.accepted)
        marks[key] = {
            "site_id": site_id,
            "letter_key": key,
            "replayed_at": replayed_at,
            "event_ids": [e.event_id for e in intake.accepted],
        }
    pipeline.flush()  # landed before marked: a crash in between replays again, as duplicates
    if marks:
        store.insert("dead_letter_replays", list(marks.values()))
    result.landed = len(marks)
    return result


def _aware(value: object) -> datetime:
    """A receive time from the store as an aware UTC datetime."""
    from datetime import UTC

    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
