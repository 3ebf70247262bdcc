"""The per-person transition: ``(state, event) -> (state, facts)``.

This is the one piece of logic both the Faust agent and the embedded runner call. It
classifies the event's touch, advances every configured funnel and returns the facts to land:
the classified event row and any newly reached stages.

Contract: events for one person must be applied in their total order (time, ``seq``,
``event_id``); the caller owns ordering and delivery. The ``state`` passed in is consumed
(it may be mutated); callers keep the returned state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from funnel.channels import ChannelRules, Touch
from funnel.clock import from_millis, to_millis
from funnel.events import Event, EventType
from funnel.facts import EventRow, Fact, StageReached
from funnel.funnels import FunnelCatalog
from funnel.progression import FunnelProgress, advance

__all__ = ["CoreConfig", "PersonState", "process"]

_TOUCH_TYPES = frozenset({EventType.IMPRESSION, EventType.CLICK})


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What the core needs to know: channel rules and funnels (both configured data)."""

    channels: ChannelRules
    funnels: FunnelCatalog

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
    funnels: dict[str, FunnelProgress] = field(default_factory=dict)


def process(
    state: PersonState | None, event: Event, config: CoreConfig
) -> tuple[PersonState, list[Fact]]:
    """Apply one event to its person's state; return the new state and the facts it yields."""
    at_ms = to_millis(event.occurred_at)
    if state is None:
        state = PersonState(event.site_id, event.person_id, at_ms, at_ms)
    state.first_seen_ms = min(state.first_seen_ms, at_ms)
    state.last_seen_ms = max(state.last_seen_ms, at_ms)

    touch = config.channels.touch_for(
        event.context, state.last_touch, inherit=event.type not in _TOUCH_TYPES
    )
    if event.type in _TOUCH_TYPES:
        state.last_touch = touch

    facts: list[Fact] = [_event_row(event, state.person_id, touch)]
    for spec in config.funnels.funnel:
        steps = spec.matching_steps(event)
        if not steps:
            continue
        progress = state.funnels.get(spec.name)
        if progress is None:
            progress = state.funnels[spec.name] = FunnelProgress.empty(len(spec.steps))
        for k in advance(progress, at_ms, steps, spec.window_ms):
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
    return state, facts


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
