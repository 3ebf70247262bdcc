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

import bisect
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from funnel.attribution import AttributionSettings, PathTouch, attribute
from funnel.channels import ChannelRules, Touch
from funnel.clock import from_millis, to_millis
from funnel.corrections import corrections
from funnel.events import Event, EventType
from funnel.facts import AttributionRow, EventRow, Fact, LeadChange, PersonRow, StageReached
from funnel.funnels import FunnelCatalog
from funnel.leads import LeadRules, LeadSignals, Temperature
from funnel.progression import IN_WINDOW, FunnelProgress, advance, deadline, status
from funnel.settings import DEDUP_HORIZON

__all__ = [
    "REGULAR_PAYMENTS",
    "CoreConfig",
    "PersonState",
    "Profile",
    "expire",
    "merge",
    "next_deadline",
    "process",
]

REGULAR_PAYMENTS = 3
"""A regular customer has made at least this many payments (DESIGN §6)."""

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
    dedup_horizon: timedelta = DEDUP_HORIZON
    lateness: timedelta = timedelta(hours=24)
    max_touches: int = 200
    max_log: int = 200

    @classmethod
    def default(cls) -> CoreConfig:
        return cls.from_files()

    @classmethod
    def from_files(
        cls,
        funnels_file: Path | None = None,
        channels_file: Path | None = None,
        *,
        leads: LeadRules | None = None,
    ) -> CoreConfig:
        """The shipped defaults, with funnels and/or channel rules from TOML files and lead
        rules as loaded (:func:`funnel.leads.load_lead_rules`)."""
        return cls(
            channels=(
                ChannelRules.from_file(channels_file) if channels_file else ChannelRules.default()
            ),
            funnels=(
                FunnelCatalog.from_file(funnels_file) if funnels_file else FunnelCatalog.default()
            ),
            leads=leads if leads is not None else LeadRules.default(),
        )


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


@dataclass(slots=True)
class PersonState:
    """Everything the pipeline remembers about one person.

    ``log`` is the person's recent events in their total order; ``profile`` is the fold of
    ``base`` (the fold of events that left the log, or nothing) and ``log``. An event that
    arrives out of order is inserted into the log and the profile is folded again; the facts
    that changed are corrected (see :func:`process`).
    """

    site_id: str
    person_id: str
    profile: Profile
    log: list[Event] = field(default_factory=list)
    base: Profile | None = None
    seen: dict[str, int] = field(default_factory=dict)
    """Applied event ids → their time, within the dedup horizon of the last event."""
    outcome: str = "applied"
    """How the last event was taken: ``applied``, ``reordered``, ``late`` or ``duplicate``."""
    statuses: dict[str, str] = field(default_factory=dict)
    """Per funnel, the status the person's last row said (see :func:`expire`)."""
    row_at_ms: int = 0
    """The ``updated_at`` of the person's last row: every later row is later still."""


def process(
    state: PersonState | None, event: Event, config: CoreConfig, person_id: str | None = None
) -> tuple[PersonState, list[Fact]]:
    """Apply one event to its person's state; return the new state and the facts it yields.

    * A duplicate (``event_id`` seen within the dedup horizon) yields no facts.
    * An event in order (not before the last one applied) is folded in incrementally.
    * An event out of order is inserted where it belongs and the history is folded again;
      the facts are then the event's row, corrections of every fact that changed (a stage
      reached at another time, credits that moved — retractions carry ``sign = -1`` or a
      negated credit) and the person's new row. Any arrival order of the same events leads
      to the same profile. An event older than ``config.lateness`` behind the person's
      latest is still applied this way, and marked ``late`` for counting.

    ``person_id`` names a new person (identity resolution decides it; by default the event's
    device, else its customer).
    """
    at_ms = to_millis(event.occurred_at)
    if state is None:
        who = person_id or event.person_id
        state = PersonState(event.site_id, who, Profile(event.site_id, who, at_ms, at_ms))
    elif event.event_id in state.seen:
        state.outcome = "duplicate"
        return state, []
    _remember(state, event.event_id, at_ms, config)
    if not state.log or state.log[-1].order_key <= event.order_key:
        state.outcome = "applied"
        facts = _apply(state.profile, event, config)
        state.log.append(event)
        _trim(state, config)
        return state, _stamped(state, facts)
    late = to_millis(state.log[-1].occurred_at) - at_ms > config.lateness / _MS
    state.outcome = "late" if late else "reordered"
    before = _fold(state.base, state.log, config, state.site_id, state.person_id)
    bisect.insort(state.log, event, key=lambda e: e.order_key)
    after = _fold(state.base, state.log, config, state.site_id, state.person_id)
    state.profile = after.profile
    _trim(state, config)
    row = next(f for f in after.facts if isinstance(f, EventRow) and f.event_id == event.event_id)
    facts = [row, *corrections(before.facts, after.facts), _person_row(after.profile, config)]
    return state, _stamped(state, facts)


@dataclass(slots=True)
class _Derived:
    profile: Profile
    facts: list[Fact]


def _fold(
    base: Profile | None, log: list[Event], config: CoreConfig, site_id: str, person_id: str
) -> _Derived:
    """The profile and every fact of ``log`` folded onto a copy of ``base``."""
    profile = copy.deepcopy(base) if base is not None else None
    facts: list[Fact] = []
    for event in log:
        if profile is None:
            at_ms = to_millis(event.occurred_at)
            profile = Profile(site_id, person_id, at_ms, at_ms)
        facts.extend(_apply(profile, event, config))
    assert profile is not None, "a person always has at least one event"
    return _Derived(profile, facts)


def merge(
    into: PersonState | None, other: PersonState, config: CoreConfig, person_id: str
) -> tuple[PersonState, list[Fact]]:
    """Merge ``other`` (an anonymous device's person) into ``into`` (the customer's).

    The histories are united (each event once) and folded again under ``person_id``; the
    facts are corrections: everything ``other`` landed is retracted, what changed for
    ``into`` is corrected, and both persons' rows are emitted (``other``'s marked merged).
    Idempotent: merging the same history twice changes nothing.
    """
    site_id = other.site_id
    if into is not None and all(e.event_id in into.seen for e in other.log):
        return into, []  # merged before (a replayed hand-over): nothing changes
    before = _fold(other.base, other.log, config, site_id, other.person_id).facts
    if into is not None:
        before += _fold(into.base, into.log, config, site_id, into.person_id).facts
    known = {e.event_id for e in into.log} if into is not None else set()
    log = sorted(
        [
            *(into.log if into is not None else []),
            *(e for e in other.log if e.event_id not in known),
        ],
        key=lambda e: e.order_key,
    )
    base = into.base if into is not None and into.base is not None else other.base
    after = _fold(base, log, config, site_id, person_id)
    seen = {**other.seen, **(into.seen if into is not None else {})}
    state = PersonState(site_id, person_id, after.profile, log, base, seen, "merged")
    state.row_at_ms = max(other.row_at_ms, into.row_at_ms if into is not None else 0)
    _trim(state, config)
    gone = replace(
        _person_row(other.profile, config),
        merged_into=person_id,
        updated_at=from_millis(max(other.profile.last_seen_ms, other.row_at_ms + 1)),
    )
    facts = [*corrections(before, after.facts), _person_row(after.profile, config)]
    return state, [gone, *_stamped(state, facts)]


def expire(state: PersonState, now_ms: int, config: CoreConfig) -> tuple[PersonState, list[Fact]]:
    """The timer's step: the person's funnel statuses and lead temperature at ``now_ms``
    (wall clock).

    A funnel whose window expired before the next step turns ``dropped``; a lead whose reason
    lapsed cools, each change emitted at the moment it lapsed (as the person's next event
    would have, see :func:`_temperature`). When a status or the temperature changed, the
    person's row is emitted again, versioned at the moment it changed (the deadline), so
    replaying the same state at another time gives the same row.
    """
    cooled = _cooled(state.profile, now_ms, config)
    row = _person_row(state.profile, config, now_ms)
    if row.funnel_status == state.statuses and not cooled:
        return state, []
    changed_at = max(
        (
            *(due for _, due in _deadlines(state.profile, config) if due < now_ms),
            *(to_millis(change.changed_at) for change in cooled),
        ),
        default=state.profile.last_seen_ms,
    )
    row = replace(row, updated_at=from_millis(max(changed_at, state.profile.last_seen_ms)))
    return state, [*cooled, *_stamped(state, [row])]


def next_deadline(state: PersonState, config: CoreConfig) -> int | None:
    """When :func:`expire` next has something to say about this person (``None``: never)."""
    dues = [
        due + 1
        for name, due in _deadlines(state.profile, config)
        if state.statuses.get(name) == IN_WINDOW
    ]
    cooling = state.profile.lead.next_cooling_ms()
    return min([*dues, cooling] if cooling is not None else dues, default=None)


def _deadlines(profile: Profile, config: CoreConfig) -> Iterator[tuple[str, int]]:
    """Per funnel the person entered and can still advance in: its deadline (epoch ms)."""
    for spec in config.funnels.specs:
        progress = profile.funnels.get(spec.name)
        if progress is not None:
            due = deadline(progress, len(spec.steps), spec.window_ms)
            if due is not None:
                yield spec.name, due


def _stamped(state: PersonState, facts: list[Fact]) -> list[Fact]:
    """Version the person's rows after every row emitted before; remember what they said."""
    out: list[Fact] = []
    for fact in facts:
        if (
            isinstance(fact, PersonRow)
            and fact.person_id == state.person_id
            and not fact.merged_into
        ):
            at_ms = max(to_millis(fact.updated_at), state.row_at_ms + 1)
            fact = replace(fact, updated_at=from_millis(at_ms))
            state.row_at_ms = at_ms
            state.statuses = dict(fact.funnel_status)
        out.append(fact)
    return out


def _trim(state: PersonState, config: CoreConfig) -> None:
    """Keep the log bounded: the oldest events beyond ``max_log`` are folded into ``base``."""
    extra = len(state.log) - config.max_log
    if extra <= 0:
        return
    dropped, state.log = state.log[:extra], state.log[extra:]
    state.base = _fold(state.base, dropped, config, state.site_id, state.person_id).profile


def _apply(profile: Profile, event: Event, config: CoreConfig) -> list[Fact]:
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
    facts.append(_person_row(state, config))
    return facts


def _remember(state: PersonState, event_id: str, at_ms: int, config: CoreConfig) -> None:
    state.seen[event_id] = at_ms
    horizon = max(state.seen.values()) - int(config.dedup_horizon / _MS)
    if len(state.seen) > 64 and min(state.seen.values()) < horizon:
        state.seen = {e: t for e, t in state.seen.items() if t >= horizon}


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
    facts: list[Fact] = [*_cooled(state, at_ms, config)]
    signals = state.lead
    signals.observe(event, at_ms, config.leads.click_memory_ms)
    if not signals.is_lead:
        return facts
    now = config.leads.evaluate(signals, at_ms)
    if now.value != state.temperature:
        facts.append(_lead_change(state, now, event.occurred_at, config))
    return facts


def _cooled(state: Profile, now_ms: int, config: CoreConfig) -> list[LeadChange]:
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


def _person_row(state: Profile, config: CoreConfig, now_ms: int | None = None) -> PersonRow:
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
