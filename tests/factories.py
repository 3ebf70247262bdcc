"""Building events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from funnel.config import CoreConfig
from funnel.events import Event, EventType
from funnel.facts import Fact
from funnel.processor import PersonState, process

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


def fold(
    events: list[Event], config: CoreConfig, state: PersonState | None = None
) -> tuple[PersonState, list[Fact]]:
    """``events`` applied in the order given (onto ``state``): the state and every fact."""
    facts: list[Fact] = []
    for event in events:
        state, out = process(state, event, config)
        facts.extend(out)
    assert state is not None
    return state, facts
