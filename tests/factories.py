"""Building events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from funnel.events import Event, EventType

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def make_event(
    kind: EventType | str,
    at: datetime | timedelta | int = 0,
    *,
    person: str = "p1",
    site: str = "s",
    seq: int | None = None,
    **fields: Any,
) -> Event:
    """An event of ``kind`` for ``person``; ``at`` is a datetime, an offset, or ms after T0."""
    if isinstance(at, int):
        at = T0 + timedelta(milliseconds=at)
    elif isinstance(at, timedelta):
        at = T0 + at
    return Event.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "type": kind,
            "site_id": site,
            "anonymous_id": person,
            "occurred_at": at,
            "seq": seq,
            **fields,
        }
    )
