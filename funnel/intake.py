"""Intake: turn the items of one incoming batch into accepted events and reasoned rejections.

Pure: the collector (or any other front door) passes what arrived — decoded JSON items, the
site its write key allows, the time, the client's IP and user agent — and gets back the
validated, enriched events and, for every item it refuses, the item's index and
machine-readable reasons. Nothing here raises for bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, TypeAdapter, ValidationError

from funnel.enrichment import ClockCorrector, anonymise_ip, correct_clock, parse_user_agent
from funnel.events import EARLIEST, LATEST, Event, InvalidEvent, parse_events

__all__ = ["POISON", "IntakeLimits", "IntakeResult", "Rejection", "runtime_error", "take_batch"]

POISON = "runtime_error"
"""The dead-letter code of an event the processing raised on: a bug's trigger, not the
sender's mistake (the Kafka worker and the embedded runner dead-letter it and go on)."""


def runtime_error(exc: BaseException) -> dict[str, str]:
    """The dead-letter error of an event the processing raised on (:data:`POISON`)."""
    return {"field": "$runtime", "reason": f"{type(exc).__name__}: {exc}"[:500], "code": POISON}


_SERVER_FIELDS = frozenset({"ip", "browser", "os", "device", "is_bot", "clock_skew_ms", "clamped"})
# Parses a time exactly as Event's AwareDatetime fields do (same type, same lax mode).
_INSTANT: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """Bounds on what one request may carry (the collector enforces body size itself)."""

    max_batch: int = 500
    future_bound: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused item: where it was in the batch, why, and what it was."""

    index: int
    errors: list[dict[str, str]]
    payload: str
    site_id: str

    @property
    def reason(self) -> str:
        """The first error's code (for counting), e.g. ``missing`` or ``site_mismatch``."""
        return self.errors[0].get("code", "invalid") if self.errors else "invalid"

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "errors": self.errors}

    def row(self, received_at: datetime) -> dict[str, object]:
        """The dead-letter record: a ``rejected_events`` row (the same from every stage)."""
        return {
            "received_at": received_at,
            "site_id": self.site_id,
            "reason": json.dumps(self.errors),
            "payload": self.payload,
        }


@dataclass(slots=True)
class IntakeResult:
    accepted: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def take_batch(
    items: list[Any],
    *,
    site_id: str,
    received_at: datetime,
    ip: str | None = None,
    user_agent: str | None = None,
    limits: IntakeLimits | None = None,
) -> IntakeResult:
    """Validate and enrich every item; the caller has checked that ``items`` is a list.

    ``site_id`` is the site the write key belongs to: an item for another site is rejected
    (``site_mismatch``); an item without one gets it. Server-set context fields (IP, browser,
    bot flag, clock skew) are overwritten, never taken from the sender.

    Cost: one validation call for the whole batch (:func:`funnel.events.parse_events`; a
    second one, of the valid items, only when some item is invalid). The clock is corrected
    on the raw item, its times parsed as :class:`Event` parses them, before it is validated:
    copying a validated event to correct it costs about as much as the validation itself.
    """
    limits = limits or IntakeLimits()
    result = IntakeResult()
    agent = parse_user_agent(user_agent)
    agent_text = user_agent[:500] if user_agent else None
    correctors: dict[str | None, ClockCorrector | None] = {}
    server_context = {
        "ip": anonymise_ip(ip) or None,
        "browser": agent.browser or None,
        "os": agent.os or None,
        "device": agent.device or None,
        "is_bot": agent.is_bot,
    }
    pending: list[tuple[int, Any, bool]] = []  # index, item, corrected: validated together
    datas: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            result.rejected.append(
                _reject(index, item, site_id, "$", "each event must be a JSON object", "type")
            )
            continue
        claimed = item.get("site_id", site_id)
        if claimed != site_id:
            result.rejected.append(
                _reject(
                    index,
                    item,
                    site_id,
                    "site_id",
                    "the write key is not valid for this site",
                    "site_mismatch",
                )
            )
            continue
        context = item.get("context")
        if context is None:
            context = {}
        data = {**item, "site_id": site_id, "received_at": received_at}
        corrected = False
        if isinstance(context, dict):
            if _SERVER_FIELDS.isdisjoint(context):
                context = dict(context)
            else:
                context = {k: v for k, v in context.items() if k not in _SERVER_FIELDS}
            if agent_text and "user_agent" not in context:
                context["user_agent"] = agent_text
            context.update(server_context)
            corrected = _correct_before_validation(
                data, context, correctors, received_at, limits.future_bound
            )
        data["context"] = context
        pending.append((index, item, corrected))
        datas.append(data)
    for (index, item, corrected), event in zip(pending, parse_events(datas), strict=True):
        if isinstance(event, InvalidEvent):
            result.rejected.append(Rejection(index, event.errors, _dump(item), site_id))
            continue
        if not corrected:
            event = _correct_after_validation(event, received_at, limits.future_bound)
        result.accepted.append(event)
    result.rejected.sort(key=lambda r: r.index)
    return result


def _instant(value: object) -> datetime | None:
    """``value`` as the tz-aware time :class:`Event` would make of it, or ``None`` when it is
    no time or outside the times an event may carry (validation then says why)."""
    try:
        moment = _INSTANT.validate_python(value)
    except ValidationError:
        return None
    return moment if EARLIEST <= moment < LATEST else None


def _correct_before_validation(
    data: dict[str, Any],
    context: dict[str, Any],
    correctors: dict[str | None, ClockCorrector | None],
    received_at: datetime,
    future_bound: timedelta,
) -> bool:
    """Apply :func:`correct_clock` to the raw item, so the event is validated once, corrected.

    Returns ``False`` (and changes nothing) when ``occurred_at`` or a present ``sent_at``
    is not a valid time: validation then rejects the item with the usual reasons.
    """
    occurred = _instant(data.get("occurred_at"))
    if occurred is None:
        return False
    raw_sent = data.get("sent_at")
    if raw_sent is None or isinstance(raw_sent, str):
        # A sender stamps one sent_at on a whole batch: one corrector per distinct value.
        if raw_sent not in correctors:
            correctors[raw_sent] = _corrector(raw_sent, received_at, future_bound)
        corrector = correctors[raw_sent]
    else:
        corrector = _corrector(raw_sent, received_at, future_bound)
    if corrector is None:
        return False
    fixed = corrector.correct(occurred)
    data["occurred_at"] = fixed.occurred_at
    if fixed.skew_ms is not None or fixed.clamped:
        context["clock_skew_ms"] = fixed.skew_ms
        context["clamped"] = fixed.clamped
    return True


def _corrector(
    raw_sent: object, received_at: datetime, future_bound: timedelta
) -> ClockCorrector | None:
    """The corrector for a sending stamped ``raw_sent``; ``None`` if that is not a time."""
    if raw_sent is None:
        return ClockCorrector(None, received_at, future_bound)
    sent = _instant(raw_sent)
    return None if sent is None else ClockCorrector(sent, received_at, future_bound)


def _correct_after_validation(
    event: Event, received_at: datetime, future_bound: timedelta
) -> Event:
    fixed = correct_clock(event.occurred_at, event.sent_at, received_at, future_bound)
    if fixed.skew_ms is None and not fixed.clamped:
        return event
    return event.model_copy(
        update={
            "occurred_at": fixed.occurred_at,
            "context": event.context.model_copy(
                update={"clock_skew_ms": fixed.skew_ms, "clamped": fixed.clamped}
            ),
        }
    )


def _reject(index: int, item: object, site_id: str, where: str, why: str, code: str) -> Rejection:
    return Rejection(index, [{"field": where, "reason": why, "code": code}], _dump(item), site_id)


def _dump(item: object) -> str:
    try:
        return json.dumps(item, default=str)[:65_536]
    except (TypeError, ValueError):
        return repr(item)[:65_536]
