"""Derived facts: the rows the pipeline lands in ClickHouse (DESIGN §9).

Each fact is an immutable record with the table it belongs to and a ``row()`` of plain Python
values (``datetime``, ``Decimal``, ``str``, ``int``) keyed by column name. Adapters serialise
rows for Kafka and ClickHouse; the core never does.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

import msgspec

__all__ = [
    "FACT_TABLES",
    "AttributionRow",
    "EventRow",
    "Fact",
    "LeadChange",
    "PersonRow",
    "StageReached",
]


class EventRow(msgspec.Struct, frozen=True, gc=False):
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
    referrer: str = ""
    user_agent: str = ""
    click_ids: dict[str, str] = msgspec.field(default_factory=dict)
    lead_form: str = ""
    raw: str = ""
    """The event as the core read it (its JSON, after intake): what ``funnel reprocess``
    reads back, field for field."""

    def row(self) -> dict[str, object]:
        return _row(self)


class StageReached(msgspec.Struct, frozen=True, gc=False):
    """A person reached a funnel step for the first time (table ``stage_reached``).

    ``step_index`` is 1-based, like the level ``windowFunnel`` returns: a person with level L
    has one row for each step 1..L. ``entered_at`` is when the chain that reached the step
    started (its step-1 event); ``channel``/``campaign`` are the last touch before the step,
    ``entry_channel``/``entry_campaign`` the touch in effect when that chain started (the
    channel that brought the person into the funnel: the breakdown of funnel reports).
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
    entry_channel: str = ""
    entry_campaign: str = ""
    sign: int = 1
    """``-1`` retracts an earlier row with the same values (a correction); count with
    ``sum(sign)``."""

    def row(self) -> dict[str, object]:
        return _row(self)


class AttributionRow(msgspec.Struct, frozen=True, gc=False):
    """One channel's credit for one conversion under one model (table ``attributions``).

    Per conversion and model the credits sum to 1 and the revenue credits to the revenue.
    """

    table: ClassVar[str] = "attributions"

    conversion_id: str
    site_id: str
    person_id: str
    conversion_type: str
    converted_at: datetime
    model: str
    channel: str
    campaign: str
    credit: float
    revenue_credit: Decimal

    def row(self) -> dict[str, object]:
        return _row(self)


class LeadChange(msgspec.Struct, frozen=True, gc=False):
    """A lead's temperature changed; routed to ``queue`` (table ``lead_changes``, topic leads)."""

    table: ClassVar[str] = "lead_changes"

    site_id: str
    person_id: str
    customer_id: str
    temperature: str
    previous: str
    queue: str
    changed_at: datetime
    manager_id: str

    def row(self) -> dict[str, object]:
        return _row(self)


class PersonRow(msgspec.Struct, frozen=True, gc=False):
    """The person's current state (table ``persons``; the latest ``updated_at`` wins)."""

    table: ClassVar[str] = "persons"

    site_id: str
    person_id: str
    first_seen: datetime
    last_seen: datetime
    first_channel: str
    last_channel: str
    lead_temperature: str
    payments: int
    revenue: Decimal
    funnel_levels: dict[str, int]
    funnel_status: dict[str, str]
    """Per funnel: ``in_window``, ``converted`` or ``dropped`` (DESIGN §6)."""
    regular: bool
    """A regular customer: three payments or more."""
    updated_at: datetime
    """The row's version: later rows of a person have later ``updated_at``."""
    merged_into: str = ""
    """Set when this (anonymous) person was merged into a known customer's person."""

    def row(self) -> dict[str, object]:
        return _row(self)


Fact = EventRow | StageReached | AttributionRow | LeadChange | PersonRow

#: The ClickHouse tables the stream produces facts for.
FACT_TABLES: tuple[str, ...] = tuple(
    kind.table for kind in (EventRow, StageReached, AttributionRow, LeadChange, PersonRow)
)


def _row(fact: msgspec.Struct) -> dict[str, object]:
    """Column name → value, shallow (values are immutable)."""
    return msgspec.structs.asdict(fact)
