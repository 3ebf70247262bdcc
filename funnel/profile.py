"""A person's profile, and one event folded into it (in order): what the pipeline derives from a
person's events — touches, funnel progress, money, lead temperature — and the facts each event
yields. :mod:`funnel.processor` orders, deduplicates, re-folds and merges around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from funnel.attribution import PathTouch, attribute
from funnel.channels import Touch
from funnel.clock import from_millis, to_millis
from funnel.config import CoreConfig
from funnel.events import Event, EventType
from funnel.facts import AttributionRow, EventRow, Fact, LeadChange, PersonRow, StageReached
from funnel.leads import LeadSignals, Temperature
from funnel.progression import FunnelProgress, advance, status

__all__ = ["REGULAR_PAYMENTS", "Profile", "apply_event", "cooled", "person_row"]

REGULAR_PAYMENTS = 3
"""A regular customer has made at least this many payments (DESIGN §6)."""

_TOUCH_TYPES = frozenset({EventType.IMPRESSION, EventType.CLICK})
_MS = timedelta(milliseconds=1)


@dataclass(slots=True)
class Profile:
    """What the pipeline derives from one person's events: the fold of their history."""

    site_id: str
    person_id: str
    first_seen_ms: int
    last_seen_ms: int
    last_touch: Touch | None = None
    first_channel: str = ""
    funnels: dict[str, FunnelProgress] = field(default_factory=dict)
    touches: list[PathTouch] = field(default_factory=list)
    summarised_touches: dict[str, int] = field(default_factory=dict)
    lead: LeadSignals = field(default_factory=LeadSignals)
    temperature: str = ""
    lead_at_ms: int | None = None
    order_at_ms: int | None = None
    paid_orders: list[str] = field(default_factory=list)
    payments: int = 0
    revenue: Decimal = Decimal(0)


def apply_event(profile: Profile, event: Event, config: CoreConfig) -> list[Fact]:
    """Fold one event (in order) into ``profile``; return its facts.

    An event flagged as a bot's (``context.is_bot``) is stored (its row) and changes nothing
    else: no touch, stage, credit, temperature or person row, so every derived fact, report
    and aggregate leaves bots out by construction (reports over ``events`` filter them).
    """
    state = profile
    if event.context.is_bot:
        inherit = event.type not in _TOUCH_TYPES
        touch = config.channels.touch_for(event.context, state.last_touch, inherit=inherit)
        return [_event_row(event, state.person_id, touch)]
    at_ms = to_millis(event.occurred_at)
    state.first_seen_ms = min(state.first_seen_ms, at_ms)
    state.last_seen_ms = max(state.last_seen_ms, at_ms)
    touch = config.channels.touch_for(
        event.context, state.last_touch, inherit=event.type not in _TOUCH_TYPES
    )
    if event.type in _TOUCH_TYPES:
        state.last_touch = touch
        state.first_channel = state.first_channel or touch.channel
        _keep_touch(state, PathTouch(at_ms, touch.channel, touch.campaign), config.max_touches)
        if event.type is EventType.CLICK:
            state.lead.click_times_ms.append(at_ms)

    facts: list[Fact] = [_event_row(event, state.person_id, touch)]
    repeat = _money(state, event)
    facts.extend(_stages(state, event, at_ms, touch, config, repeat))
    if event.type in config.conversions:
        facts.extend(_credits(state, event, at_ms, config))
    facts.extend(_temperature(state, event, at_ms, config))
    facts.append(person_row(state, config))
    return facts


def _keep_touch(state: Profile, touch: PathTouch, limit: int) -> None:
    """Append to the bounded path: the first touch stays, the oldest after it is summarised."""
    state.touches.append(touch)
    if len(state.touches) > limit:
        dropped = state.touches.pop(1)
        state.summarised_touches[dropped.channel] = (
            state.summarised_touches.get(dropped.channel, 0) + 1
        )


def _money(state: Profile, event: Event) -> bool:
    """Track orders and payments; return whether this event is a repeat purchase (DESIGN §6:
    a ``repeat`` event, or a payment for a new order after a first payment)."""
    order_id = event.order_id or ""
    if event.type is EventType.ORDER:
        state.order_at_ms = to_millis(event.occurred_at)
        if order_id and order_id not in state.lead.open_orders:
            state.lead.open_orders.append(order_id)
        return False
    if event.type not in (EventType.PAYMENT, EventType.REPEAT):
        return False
    repeat = event.type is EventType.REPEAT or (
        state.payments > 0 and bool(order_id) and order_id not in state.paid_orders
    )
    if order_id in state.lead.open_orders:
        state.lead.open_orders.remove(order_id)
    if order_id and order_id not in state.paid_orders:
        state.paid_orders.append(order_id)
    state.payments += 1
    state.revenue += event.revenue or Decimal(0)
    return repeat


def _stages(
    state: Profile, event: Event, at_ms: int, touch: Touch, config: CoreConfig, repeat: bool
) -> list[Fact]:
    facts: list[Fact] = []
    for spec in config.funnels.specs:
        steps = spec.matching_steps(event, also_repeat=repeat)
        progress = state.funnels.get(spec.name)
        if progress is None:
            if not steps:
                continue
            progress = state.funnels[spec.name] = FunnelProgress.empty(len(spec.steps))
        for k in advance(progress, at_ms, steps, spec.window_ms, spec.mode.value):
            start_ms, reached_ms = progress.chain[k] or (at_ms, at_ms)
            entry = _touch_at(state.touches, start_ms) or PathTouch(
                at_ms, touch.channel, touch.campaign
            )
            facts.append(
                StageReached(
                    site_id=event.site_id,
                    person_id=state.person_id,
                    funnel=spec.name,
                    step=spec.steps[k].name,
                    step_index=k + 1,
                    reached_at=from_millis(reached_ms),
                    entered_at=from_millis(start_ms),
                    channel=touch.channel,
                    campaign=touch.campaign,
                    entry_channel=entry.channel,
                    entry_campaign=entry.campaign,
                )
            )
    return facts


def _touch_at(touches: list[PathTouch], at_ms: int) -> PathTouch | None:
    """The touch in effect at ``at_ms``: the last one at or before it (touches are in time
    order), or ``None`` when the path starts later."""
    found = None
    for touch in touches:
        if touch.at_ms > at_ms:
            break
        found = touch
    return found


def _credits(state: Profile, event: Event, at_ms: int, config: CoreConfig) -> list[Fact]:
    if event.type is EventType.LEAD:
        state.lead_at_ms = at_ms
    credits = attribute(
        state.touches,
        at_ms,
        event.revenue or Decimal(0),
        lead_at_ms=state.lead_at_ms,
        order_at_ms=state.order_at_ms,
        settings=config.attribution,
    )
    return [
        AttributionRow(
            conversion_id=event.event_id,
            site_id=event.site_id,
            person_id=state.person_id,
            conversion_type=event.type.value,
            converted_at=event.occurred_at,
            model=c.model,
            channel=c.channel,
            campaign=c.campaign,
            credit=c.credit,
            revenue_credit=c.revenue_credit,
        )
        for c in credits
    ]


def _temperature(state: Profile, event: Event, at_ms: int, config: CoreConfig) -> list[Fact]:
    """Re-evaluate the lead's temperature at the event. The changes the timer would have
    emitted by now come first, at their own times (from the plan made at the previous event,
    whose signals were those in force until now), so the facts do not depend on whether the
    timer ran before this event."""
    facts: list[Fact] = [*cooled(state, at_ms, config)]
    signals = state.lead
    signals.observe(event, at_ms, config.leads.click_memory_ms)
    if not signals.is_lead:
        return facts
    now = config.leads.evaluate(signals, at_ms)
    if now.value != state.temperature:
        facts.append(_lead_change(state, now, event.occurred_at, config))
    return facts


def cooled(state: Profile, now_ms: int, config: CoreConfig) -> list[LeadChange]:
    """The lead's planned changes due by ``now_ms``: reasons that lapsed with no event since."""
    return [
        _lead_change(state, temperature, from_millis(at_ms), config)
        for at_ms, temperature in state.lead.due(now_ms)
        if temperature.value != state.temperature
    ]


def _lead_change(
    state: Profile, temperature: Temperature, at: datetime, config: CoreConfig
) -> LeadChange:
    """The change to ``temperature`` at ``at``, versioned after every change emitted before
    (an event older than a change the timer emitted), so the latest is the current one."""
    previous, state.temperature = state.temperature, temperature.value
    last = state.lead.changed_at_ms
    if last is not None and to_millis(at) <= last:
        at = from_millis(last + 1)
    state.lead.changed_at_ms = to_millis(at)
    return LeadChange(
        site_id=state.site_id,
        person_id=state.person_id,
        customer_id=state.lead.customer_id,
        temperature=temperature.value,
        previous=previous,
        queue=config.leads.queue(temperature),
        changed_at=at,
        manager_id=state.lead.manager_id,
    )


def person_row(state: Profile, config: CoreConfig, now_ms: int | None = None) -> PersonRow:
    """The person's row; statuses as of ``now_ms`` (default: the person's latest event)."""
    now = state.last_seen_ms if now_ms is None else now_ms
    statuses = {
        spec.name: status(progress, len(spec.steps), spec.window_ms, now)
        for spec in config.funnels.specs
        if (progress := state.funnels.get(spec.name)) is not None
    }
    return PersonRow(
        site_id=state.site_id,
        person_id=state.person_id,
        first_seen=from_millis(state.first_seen_ms),
        last_seen=from_millis(state.last_seen_ms),
        first_channel=state.first_channel,
        last_channel=state.last_touch.channel if state.last_touch else "",
        lead_temperature=state.temperature,
        payments=state.payments,
        revenue=state.revenue,
        funnel_levels={name: p.level for name, p in state.funnels.items()},
        funnel_status=statuses,
        regular=state.payments >= REGULAR_PAYMENTS,
        updated_at=from_millis(state.last_seen_ms),
    )


def _event_row(event: Event, person_id: str, touch: Touch) -> EventRow:
    return EventRow(
        event_id=event.event_id,
        site_id=event.site_id,
        event_type=event.type.value,
        occurred_at=event.occurred_at,
        received_at=event.received_at or event.occurred_at,
        anonymous_id=event.anonymous_id or "",
        customer_id=event.customer_id or "",
        person_id=person_id,
        seq=event.seq,
        channel=touch.channel,
        source=touch.source,
        medium=touch.medium,
        campaign=touch.campaign,
        term=touch.term,
        content=touch.content,
        referrer_host=touch.referrer_host,
        url=event.context.url or "",
        order_id=event.order_id or "",
        revenue=event.revenue if event.revenue is not None else Decimal(0),
        currency=event.currency or "",
        manager_id=event.manager_id or "",
        lead_intent=(event.lead.intent or "") if event.lead else "",
        properties={k: "" if v is None else str(v) for k, v in event.properties.items()},
        is_bot=event.context.is_bot,
        browser=event.context.browser or "",
        os=event.context.os or "",
        device=event.context.device or "",
        ip=event.context.ip or "",
        clock_skew_ms=event.context.clock_skew_ms,
        clamped=event.context.clamped,
    )
