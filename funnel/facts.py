"""Derived facts: the rows the pipeline lands in ClickHouse (DESIGN §9).

Each fact is an immutable record with the table it belongs to and a ``row()`` of plain Python
values (``datetime``, ``Decimal``, ``str``, ``int``) keyed by column name. Adapters serialise
rows for Kafka and ClickHouse; the core never does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

__all__ = ["EventRow", "Fact", "StageReached"]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One accepted event, classified and assigned to a person (table ``events``)."""

    table: ClassVar[str] = "events"

    event_id: str
    site_id: str
    event_type: str
    occurred_at: datetime
    received_at: datetime
    anonymous_id: str
    customer_id: str
    person_id: str
    seq: int | None
    channel: str
    source: str
    medium: str
    campaign: str
    term: str
    content: str
    referrer_host: str
    url: str
    order_id: str
    revenue: Decimal
    currency: str
    manager_id: str
    lead_intent: str
    properties: dict[str, str]
    is_bot: bool = False
    browser: str = ""
    os: str = ""
    device: str = ""
    ip: str = ""
    clock_skew_ms: int | None = None
    clamped: bool = False

    def row(self) -> dict[str, object]:
        return _row(self)


@dataclass(frozen=True, slots=True)
class StageReached:
    """A person reached a funnel step for the first time (table ``stage_reached``).

    ``step_index`` is 1-based, like the level ``windowFunnel`` returns: a person with level L
    has one row for each step 1..L. ``entered_at`` is when the chain that reached the step
    started (its step-1 event); ``channel``/``campaign`` are the last touch before the step.
    """

    table: ClassVar[str] = "stage_reached"

    site_id: str
    person_id: str
    funnel: str
    step: str
    step_index: int
    reached_at: datetime
    entered_at: datetime
    channel: str
    campaign: str

    def row(self) -> dict[str, object]:
        return _row(self)


Fact = EventRow | StageReached

_COLUMNS: dict[type, tuple[str, ...]] = {}


def _row(fact: object) -> dict[str, object]:
    """Column name → value, shallow (values are immutable; ``asdict`` would deep-copy)."""
    kind = type(fact)
    names = _COLUMNS.get(kind)
    if names is None:
        names = _COLUMNS[kind] = tuple(f.name for f in fields(fact))  # type: ignore[arg-type]
    return {name: getattr(fact, name) for name in names}
