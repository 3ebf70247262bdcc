"""The per-person transition: ``(state, event) -> (state, facts)``.

This is the one piece of logic both the Faust agent and the embedded runner call. For each
event it

1. drops a duplicate (an ``event_id`` already applied within the dedup horizon): the facts
   are then an empty list — every first application yields at least the event row;
2. classifies the event's touch and keeps the person's touch path (bounded; the first touch
   is kept, older middle touches are summarised per channel, never silently lost);
3. advances every configured funnel (``windowFunnel`` semantics) and emits newly reached
   stages;
4. credits a conversion (lead, order, payment, repeat) under every rule-based attribution
   model;
5. re-evaluates the lead's temperature and emits a change with its routing queue;
6. emits the person's current row.

Contract: events for one person must be applied in their total order (time, ``seq``,
``event_id``); the caller owns ordering and delivery. The ``state`` passed in is consumed
(it may be mutated); callers keep the returned state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from funnel.attribution import AttributionSettings, PathTouch, attribute
from funnel.channels import ChannelRules, Touch
from funnel.clock import from_millis, to_millis
from funnel.events import Event, EventType
from funnel.facts import AttributionRow, EventRow, Fact, LeadChange, PersonRow, StageReached
from funnel.funnels import FunnelCatalog
from funnel.leads import LeadRules, LeadSignals
from funnel.progression import FunnelProgress, advance

__all__ = ["CoreConfig", "PersonState", "process"]

_TOUCH_TYPES = frozenset({EventType.IMPRESSION, EventType.CLICK})
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What the core needs to know (all configured data)."""

    channels: ChannelRules
    funnels: FunnelCatalog
    leads: LeadRules = field(default_factory=LeadRules.default)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    conversions: frozenset[EventType] = frozenset(
        {EventType.LEAD, EventType.ORDER, EventType.PAYMENT, EventType.REPEAT}
    )
    dedup_horizon: timedelta = timedelta(days=7)
    max_touches: int = 200

    @classmethod
    def default(cls) -> CoreConfig:
        return cls(channels=ChannelRules.default(), funnels=FunnelCatalog.default())


@dataclass(slots=True)
class PersonState:
    """Everything the pipeline remembers about one person."""

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
    seen: dict[str, int] = field(default_factory=dict)
    """Applied event ids → their time, within the dedup horizon of ``last_seen_ms``."""


def process(
    state: PersonState | None, event: Event, config: CoreConfig
) -> tuple[PersonState, list[Fact]]:
    """Apply one event to its person's state; return the new state and the facts it yields."""
    at_ms = to_millis(event.occurred_at)
    if state is None:
        state = PersonState(event.site_id, event.person_id, at_ms, at_ms)
    elif event.event_id in state.seen:
        return state, []
    _remember(state, event.event_id, at_ms, config)

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
    facts.append(_person_row(state, at_ms))
    return state, facts


def _remember(state: PersonState, event_id: str, at_ms: int, config: CoreConfig) -> None:
    state.first_seen_ms = min(state.first_seen_ms, at_ms)
    state.last_seen_ms = max(state.last_seen_ms, at_ms)
    state.seen[event_id] = at_ms
    horizon = state.last_seen_ms - int(config.dedup_horizon / _MS)
    if len(state.seen) > 64 and min(state.seen.values()) < horizon:
        state.seen = {e: t for e, t in state.seen.items() if t >= horizon}


def _keep_touch(state: PersonState, touch: PathTouch, limit: int) -> None:
    """Append to the bounded path: the first touch stays, the oldest after it is summarised."""
    state.touches.append(touch)
    if len(state.touches) > limit:
        dropped = state.touches.pop(1)
        state.summarised_touches[dropped.channel] = (
            state.summarised_touches.get(dropped.channel, 0) + 1
        )


def _money(state: PersonState, event: Event) -> bool:
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
    state: PersonState, event: Event, at_ms: int, touch: Touch, config: CoreConfig, repeat: bool
) -> list[Fact]:
    facts: list[Fact] = []
    for spec in config.funnels.funnel:
        steps = spec.matching_steps(event, also_repeat=repeat)
        progress = state.funnels.get(spec.name)
        if progress is None:
            if not steps:
                continue
            progress = state.funnels[spec.name] = FunnelProgress.empty(len(spec.steps))
        for k in advance(progress, at_ms, steps, spec.window_ms, spec.mode.value):
            start_ms, reached_ms = progress.chain[k] or (at_ms, at_ms)
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
                )
            )
    return facts


def _credits(state: PersonState, event: Event, at_ms: int, config: CoreConfig) -> list[Fact]:
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


def _temperature(state: PersonState, event: Event, at_ms: int, config: CoreConfig) -> list[Fact]:
    signals = state.lead
    if event.type in (EventType.LEAD, EventType.ORDER):
        signals.is_lead = True
    if event.lead is not None and event.lead.intent:
        signals.intent = event.lead.intent
    memory = config.leads.click_memory_ms
    signals.click_times_ms = [t for t in signals.click_times_ms if t >= at_ms - memory]
    if not signals.is_lead:
        return []
    now = config.leads.temperature(signals, at_ms)
    if now.value == state.temperature:
        return []
    previous, state.temperature = state.temperature, now.value
    return [
        LeadChange(
            site_id=event.site_id,
            person_id=state.person_id,
            customer_id=event.customer_id or "",
            temperature=now.value,
            previous=previous,
            queue=config.leads.queue(now),
            changed_at=event.occurred_at,
            manager_id=event.manager_id or "",
        )
    ]


def _person_row(state: PersonState, at_ms: int) -> PersonRow:
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
        updated_at=from_millis(at_ms),
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
