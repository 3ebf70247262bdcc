"""The touchpoint event: the wire contract of DESIGN §4, validated with pydantic at the edge.

An :class:`Event` is immutable once validated. Everything downstream (channels, funnels,
storage rows) reads these typed fields; nothing re-parses the raw JSON.
"""

from __future__ import annotations

import operator
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from funnel.currencies import ISO_4217

__all__ = [
    "CLICK_ID_PARAMS",
    "EARLIEST",
    "LATEST",
    "MAX_SEQ",
    "Context",
    "Event",
    "EventType",
    "InvalidEvent",
    "LeadInfo",
    "parse_event",
    "parse_events",
]


class EventType(StrEnum):
    """The six touchpoint types, in funnel order."""

    IMPRESSION = "impression"
    CLICK = "click"
    LEAD = "lead"
    ORDER = "order"
    PAYMENT = "payment"
    REPEAT = "repeat"


#: Advertising click-id query parameters (DESIGN §4 ``context``), in precedence order.
CLICK_ID_PARAMS: tuple[str, ...] = (
    "gclid",
    "fbclid",
    "msclkid",
    "ttclid",
    "li_fat_id",
    "twclid",
    "yclid",
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(max_length=500)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
#: A property value: text, a number (finite: NaN and infinities are refused), a flag or null.
Scalar = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None

_MAX_PROPERTIES = 50
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: The times an event may carry (``occurred_at``, ``sent_at``): from 2000-01-01 to before
#: 2100-01-01, UTC. What the store's time columns and buckets hold with room to spare
#: (``DateTime`` ends in 2106); an ``occurred_at`` ahead of the collector's clock is clamped
#: to the receipt time later (``future_bound``), so the upper end only keeps arithmetic sane.
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
#: An event's own times: tz-aware, from EARLIEST to before LATEST. The bounds are checked by
#: pydantic-core itself (a Python validator here cost ~5% of the collector's time); their
#: errors are reported as ``time_out_of_range`` (:func:`_reason`).
Instant = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
_BOUNDS: Final = frozenset({"greater_than_equal", "less_than"})
_TIMES: Final = frozenset({"occurred_at", "sent_at"})
_OUT_OF_RANGE: Final = f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)"
#: ``seq`` is stored as a 64-bit integer: at most 2^63 - 1.
MAX_SEQ: Final = 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=4000)


_CLICK_IDS = operator.attrgetter(*CLICK_ID_PARAMS)


class Context(_Strict):
    """Where a touch came from: page, referrer, user agent, UTM tags and click ids."""

    url: LongText | None = None
    referrer: LongText | None = None
    user_agent: ShortText | None = None
    utm_source: ShortText | None = None
    utm_medium: ShortText | None = None
    utm_campaign: ShortText | None = None
    utm_term: ShortText | None = None
    utm_content: ShortText | None = None
    gclid: ShortText | None = None
    fbclid: ShortText | None = None
    msclkid: ShortText | None = None
    ttclid: ShortText | None = None
    li_fat_id: ShortText | None = None
    twclid: ShortText | None = None
    yclid: ShortText | None = None
    # Set by the collector, never trusted from the sender (the collector overwrites them).
    ip: ShortText | None = None
    browser: ShortText | None = None
    os: ShortText | None = None
    device: ShortText | None = None
    is_bot: bool = False
    clock_skew_ms: int | None = None
    clamped: bool = False

    def click_ids(self) -> dict[str, str]:
        """The click ids present, in precedence order."""
        values = _CLICK_IDS(self)  # one call for all of them: most contexts carry none
        if not any(values):
            return {}
        return {name: value for name, value in zip(CLICK_ID_PARAMS, values, strict=True) if value}


class LeadInfo(_Strict):
    """What a lead asked for (other fields belong in the event's ``properties``)."""

    form: ShortText | None = None
    intent: ShortText | None = None


class Event(_Strict):
    """One touchpoint event (DESIGN §4). Times are tz-aware; ``revenue`` is a Decimal."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    type: EventType
    site_id: Id
    anonymous_id: Id | None = None
    customer_id: Id | None = None
    occurred_at: Instant
    sent_at: Instant | None = None
    received_at: AwareDatetime | None = None
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None
    context: Context = Field(default_factory=Context)
    order_id: Id | None = None
    revenue: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)] | None = None
    currency: str | None = None
    lead: LeadInfo | None = None
    manager_id: Id | None = None
    properties: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("event_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if _CANONICAL_UUID.fullmatch(value):
            return value  # already its canonical form (what senders send): no UUID object
        try:
            return str(uuid.UUID(value))  # canonical lower-case form: one id, one spelling
        except ValueError:
            raise ValueError("event_id must be a UUID string") from None

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str | None) -> str | None:
        if value is not None and value not in ISO_4217:
            raise PydanticCustomError(
                "currency_unknown", "currency must be an ISO 4217 code such as 'USD'"
            )
        return value

    @field_validator("properties")
    @classmethod
    def _bounded_properties(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        if len(value) > _MAX_PROPERTIES:
            raise ValueError(f"at most {_MAX_PROPERTIES} properties are allowed")
        return value

    @model_validator(mode="after")
    def _identity_and_money(self) -> Self:
        if self.anonymous_id is None and self.customer_id is None:
            raise ValueError("one of anonymous_id and customer_id is required")
        if self.revenue is not None and self.currency is None:
            raise ValueError("revenue needs a currency")
        return self

    @property
    def person_id(self) -> str:
        """The person this event belongs to: the device when one is known, else the customer.

        Identity stitching across devices (issue 4) will map both to one person; until then a
        person is the device id, or the customer id for back-end events that know no device.
        """
        return self.anonymous_id or self.customer_id or ""

    @property
    def partition_key(self) -> str:
        """The Kafka key and state key: ``site_id:person_id``, so a person's events stay ordered."""
        return f"{self.site_id}:{self.person_id}"

    @property
    def order_key(self) -> tuple[datetime, int, str]:
        """Total order of a person's events: time, then ``seq``, then ``event_id`` (DESIGN §6)."""
        return (self.occurred_at, self.seq if self.seq is not None else -1, self.event_id)


class InvalidEvent(ValueError):
    """An event failed validation. ``errors`` names each invalid field with a reason."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))


def parse_event(data: dict[str, Any] | str | bytes) -> Event:
    """Validate one wire event; raise :class:`InvalidEvent` with machine-readable reasons."""
    try:
        if isinstance(data, dict):
            return Event.model_validate(data)
        return Event.model_validate_json(data)
    except ValidationError as exc:
        reasons = [_reason(err["loc"], err) for err in exc.errors(include_url=False)]
        raise InvalidEvent(reasons) from None


_EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def parse_events(items: list[dict[str, Any]]) -> list[Event | InvalidEvent]:
    """:func:`parse_event` for many, in one validation call (the common case: all valid);
    per item, its event or its reasons (the same as :func:`parse_event` gives)."""
    try:
        return list(_EVENTS.validate_python(items))
    except ValidationError as exc:
        errors: dict[int, list[dict[str, str]]] = {}
        for err in exc.errors(include_url=False):
            index, *where = err["loc"]
            errors.setdefault(int(index), []).append(_reason(tuple(where), err))
    good = [item for i, item in enumerate(items) if i not in errors]
    valid = iter(_EVENTS.validate_python(good) if good else ())
    return [InvalidEvent(errors[i]) if i in errors else next(valid) for i in range(len(items))]


def _reason(loc: tuple[int | str, ...], err: Any) -> dict[str, str]:
    field = ".".join(str(part) for part in loc) or "$"
    if err["type"] in _BOUNDS and loc and loc[-1] in _TIMES:
        return {"field": field, "reason": _OUT_OF_RANGE, "code": "time_out_of_range"}
    return {"field": field, "reason": err["msg"], "code": err["type"]}
