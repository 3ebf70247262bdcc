"""A person's profile, and one event folded into it (in order): what the pipeline derives from a
person's events — touches, funnel progress, money, lead temperature — and the facts each event
yields. :mod:`funnel.processor` orders, deduplicates, re-folds and merges around it.

The fold (:func:`apply_entry`) reads an event through its :class:`Entry`: the few fields it
needs (time, type, the event's own channel classification, order, revenue, intent, the fields
step filters compare), which is also what a person's log keeps (DESIGN §9a: compact state).
The event's full row is built once, when the event arrives (:func:`event_row`).

Bounded for a person with any number of events: the touch path (``max_touches``), the paid
and open orders (:data:`MAX_PAID_ORDERS`, :data:`MAX_OPEN_ORDERS`) and the clicks a lead
rule looks at (:data:`funnel.leads.MAX_CLICKS`) keep their most recent items.
"""

from __future__ import annotations

import bisect
import operator
from datetime import datetime, timedelta
from decimal import Decimal

import msgspec

from funnel.attribution import PathTouch, attribute
from funnel.channels import Touch
from funnel.clock import from_micros, from_millis, to_micros, to_millis
from funnel.config import CoreConfig
from funnel.events import Event, EventType, Scalar
from funnel.facts import AttributionRow, EventRow, Fact, LeadChange, PersonRow, StageReached
from funnel.funnels import where_values
from funnel.leads import LeadSignals, Temperature
from funnel.progression import FunnelProgress, advance, status

__all__ = [
    "MAX_OPEN_ORDERS",
    "MAX_PAID_ORDERS",
    "REGULAR_PAYMENTS",
    "Entry",
    "Profile",
    "apply_entry",
    "cooled",
    "entry_of",
    "event_row",
    "person_row",
]

REGULAR_PAYMENTS = 3
"""A regular customer has made at least this many payments (DESIGN §6)."""
MAX_PAID_ORDERS = 256
"""Paid orders remembered per person (a payment for an order among them is not a repeat)."""
MAX_OPEN_ORDERS = 64
"""Open (unpaid) orders remembered per person; the oldest is forgotten first."""

_TOUCH_TYPES = frozenset({EventType.IMPRESSION, EventType.CLICK})
_MS = timedelta(milliseconds=1)


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One event as a person's log keeps it: what the fold reads, nothing else."""

    at_us: int
    """When it occurred, in microseconds since the epoch (its exact time)."""
    seq: int
    """The sender's sequence number (``-1``: none)."""
    event_id: str
    type: EventType
    touch: Touch | None
    """The event's own channel (:meth:`funnel.channels.ChannelRules.classify`; ``None``: a
    same-site referrer with no tags)."""
    bot: bool = False
    order_id: str = ""
    revenue: Decimal | None = None
    intent: str = ""
    customer_id: str = ""
    manager_id: str = ""
    values: dict[str, Scalar] = msgspec.field(default_factory=dict)
    """The fields the configured step filters compare (:func:`funnel.funnels.where_values`)."""

    @property
    def order_key(self) -> tuple[int, int, str]:
        """The person's total order (DESIGN §6): time, then ``seq``, then ``event_id``."""
        return (self.at_us, self.seq, self.event_id)

    @property
    def at_ms(self) -> int:
        return self.at_us // 1000


def entry_of(event: Event, config: CoreConfig) -> Entry:
    """The log entry of an event under ``config`` (its channel rules and step filters)."""
    keys = config.funnels.where_keys
    return Entry(
        to_micros(event.occurred_at),
        -1 if event.seq is None else event.seq,
        event.event_id,
        event.type,
        config.channels.classify(event.context),
        event.context.is_bot,
        event.order_id or "",
        event.revenue,
        (event.lead.intent or "") if event.lead is not None else "",
        event.customer_id or "",
        event.manager_id or "",
        where_values(event, keys) if keys else {},
    )


class Profile(msgspec.Struct, array_like=True, gc=False):
    """What the pipeline derives from one person's events: the fold of their history."""

    site_id: str
    person_id: str
    first_seen_ms: int
    last_seen_ms: int
    last_touch: Touch | None = None
    first_channel: str = ""
    funnels: dict[str, FunnelProgress] = msgspec.field(default_factory=dict)
    touches: list[PathTouch] = msgspec.field(default_factory=list)
    summarised_touches: dict[str, int] = msgspec.field(default_factory=dict)
    lead: LeadSignals = msgspec.field(default_factory=LeadSignals)
    temperature: str = ""
    lead_at_ms: int | None = None
    order_at_ms: int | None = None
    paid_orders: list[str] = msgspec.field(default_factory=list)
    payments: int = 0
    revenue: Decimal = Decimal(0)

    def clone(self) -> Profile:
        """An independent copy (the items shared are immutable)."""
        return Profile(
            self.site_id,
            self.person_id,
            self.first_seen_ms,
            self.last_seen_ms,
            self.last_touch,
            self.first_channel,
            {name: progress.clone() for name, progress in self.funnels.items()},
            list(self.touches),
            dict(self.summarised_touches),
            self.lead.clone(),
            self.temperature,
            self.lead_at_ms,
            self.order_at_ms,
            list(self.paid_orders),
            self.payments,
            self.revenue,
        )


def apply_entry(profile: Profile, entry: Entry, config: CoreConfig) -> tuple[Touch, list[Fact]]:
    """Fold one logged event (in order) into ``profile``; return the touch it counts as and
    the facts it yields besides its own row and the person's row: stages reached, credits
    and lead changes.

    An event flagged as a bot's (``context.is_bot``) is stored (its row) and changes nothing
    else: no touch, stage, credit, temperature or person row, so every derived fact, report
    and aggregate leaves bots out by construction (reports over ``events`` filter them).
    """
    state = profile
    kind = entry.type
    is_touch = kind in _TOUCH_TYPES
    touch = config.channels.resolve(entry.touch, state.last_touch, inherit=not is_touch)
    if entry.bot:
        return touch, []
    at_ms = entry.at_us // 1000
    if at_ms < state.first_seen_ms:
        state.first_seen_ms = at_ms
    if at_ms > state.last_seen_ms:
        state.last_seen_ms = at_ms
    if is_touch:
        state.last_touch = touch
        state.first_channel = state.first_channel or touch.channel
        _keep_touch(state, PathTouch(at_ms, touch.channel, touch.campaign), config.max_touches)
        if kind is EventType.CLICK:
            state.lead.click(at_ms)
    facts: list[Fact] = []
    repeat = _money(state, entry)
    _stages(state, entry, at_ms, touch, config, repeat, facts)
    if kind in config.conversions:
        _credits(state, entry, at_ms, config, facts)
    _temperature(state, entry, at_ms, config, facts)
    return touch, facts


def _keep_touch(state: Profile, touch: PathTouch, limit: int) -> None:
    """Append to the bounded path: the first touch stays, the oldest after it is summarised."""
    state.touches.append(touch)
    if len(state.touches) > limit:
        dropped = state.touches.pop(1)
        state.summarised_touches[dropped.channel] = (
            state.summarised_touches.get(dropped.channel, 0) + 1
        )


def _money(state: Profile, entry: Entry) -> bool:
    """Track orders and payments; return whether this event is a repeat purchase (DESIGN §6:
    a ``repeat`` event, or a payment for a new order after a first payment)."""
    order_id = entry.order_id
    kind = entry.type
    if kind is EventType.ORDER:
        state.order_at_ms = entry.at_us // 1000
        open_orders = state.lead.open_orders
        if order_id and order_id not in open_orders:
            open_orders.append(order_id)
            if len(open_orders) > MAX_OPEN_ORDERS:
                del open_orders[0]
        return False
    if kind is not EventType.PAYMENT and kind is not EventType.REPEAT:
        return False
    paid = state.paid_orders
    repeat = kind is EventType.REPEAT or (
        state.payments > 0 and bool(order_id) and order_id not in paid
    )
    if order_id in state.lead.open_orders:
        state.lead.open_orders.remove(order_id)
    if order_id and order_id not in paid:
        paid.append(order_id)
        if len(paid) > MAX_PAID_ORDERS:
            del paid[0]
    state.payments += 1
    if entry.revenue is not None:
        state.revenue += entry.revenue
    return repeat


def _stages(
    state: Profile,
    entry: Entry,
    at_ms: int,
    touch: Touch,
    config: CoreConfig,
    repeat: bool,
    facts: list[Fact],
) -> None:
    funnels = state.funnels
    kind = entry.type
    at = None
    for spec, name, steps, filtered, window_ms, mode, size, names in config.funnels.plan[
        kind, repeat
    ]:
        if filtered:
            steps = spec.steps_for(kind, entry.values, also_repeat=repeat)
        progress = funnels.get(name)
        if progress is None:
            if not steps:
                continue
            progress = funnels[name] = FunnelProgress.empty(size)
        elif not steps and mode != "strict":
            continue  # an event of no step changes nothing, unless it stops a strict scan
        reached = advance(progress, at_ms, steps, window_ms, mode)
        if not reached:
            continue
        if at is None:
            at = from_millis(at_ms)
        for k in reached:
            start_ms, reached_ms = progress.chain[k] or (at_ms, at_ms)
            entered = _touch_at(state.touches, start_ms) or PathTouch(
                at_ms, touch.channel, touch.campaign
            )
            facts.append(
                StageReached(
                    state.site_id,
                    state.person_id,
                    name,
                    names[k],
                    k + 1,
                    at if reached_ms == at_ms else from_millis(reached_ms),
                    at if start_ms == at_ms else from_millis(start_ms),
                    touch.channel,
                    touch.campaign,
                    entered.channel,
                    entered.campaign,
                )
            )


def _touch_at(touches: list[PathTouch], at_ms: int) -> PathTouch | None:
    """The touch in effect at ``at_ms``: the last one at or before it (touches are in time
    order), or ``None`` when the path starts later."""
    found = bisect.bisect_right(touches, at_ms, key=_touch_time)
    return touches[found - 1] if found else None


_touch_time = operator.attrgetter("at_ms")
_to_json = Event.__pydantic_serializer__.to_json  # model_dump_json without its wrapper


def _credits(
    state: Profile, entry: Entry, at_ms: int, config: CoreConfig, facts: list[Fact]
) -> None:
    if entry.type is EventType.LEAD:
        state.lead_at_ms = at_ms
    credits = attribute(
        state.touches,
        at_ms,
        entry.revenue or Decimal(0),
        lead_at_ms=state.lead_at_ms,
        order_at_ms=state.order_at_ms,
        settings=config.attribution,
    )
    converted_at = from_micros(entry.at_us)
    kind = entry.type.value
    facts.extend(
        AttributionRow(
            conversion_id=entry.event_id,
            site_id=state.site_id,
            person_id=state.person_id,
            conversion_type=kind,
            converted_at=converted_at,
            model=c.model,
            channel=c.channel,
            campaign=c.campaign,
            credit=c.credit,
            revenue_credit=c.revenue_credit,
        )
        for c in credits
    )


def _temperature(
    state: Profile, entry: Entry, at_ms: int, config: CoreConfig, facts: list[Fact]
) -> None:
    """Re-evaluate the lead's temperature at the event. The changes the timer would have
    emitted by now come first, at their own times (from the plan made at the previous event,
    whose signals were those in force until now), so the facts do not depend on whether the
    timer ran before this event."""
    signals = state.lead
    if signals.cooling:
        facts.extend(cooled(state, at_ms, config))
    signals.observe(
        entry.type,
        entry.intent,
        entry.customer_id,
        entry.manager_id,
        at_ms,
        config.leads.click_memory_ms,
    )
    if not signals.is_lead:
        return
    now = config.leads.evaluate(signals, at_ms)
    if now.value != state.temperature:
        facts.append(_lead_change(state, now, from_micros(entry.at_us), config))


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
    funnels = state.funnels
    statuses = {
        name: status(progress, size, window_ms, now)
        for name, size, window_ms in config.funnels.shapes
        if (progress := funnels.get(name)) is not None
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


def event_row(event: Event, person_id: str, touch: Touch) -> EventRow:
    """The event's row in ``events``: as it arrived, classified as ``touch``, and whole
    (``raw``: its JSON, what ``funnel reprocess`` reads back)."""
    context, lead = event.context, event.lead
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
        url=context.url or "",
        order_id=event.order_id or "",
        revenue=event.revenue if event.revenue is not None else Decimal(0),
        currency=event.currency or "",
        manager_id=event.manager_id or "",
        lead_intent=(lead.intent or "") if lead is not None else "",
        properties={k: "" if v is None else str(v) for k, v in event.properties.items()},
        is_bot=context.is_bot,
        browser=context.browser or "",
        os=context.os or "",
        device=context.device or "",
        ip=context.ip or "",
        clock_skew_ms=context.clock_skew_ms,
        clamped=context.clamped,
        referrer=context.referrer or "",
        user_agent=context.user_agent or "",
        click_ids=context.click_ids(),
        lead_form=(lead.form or "") if lead is not None else "",
        raw=_to_json(event, exclude_none=True).decode(),
    )
