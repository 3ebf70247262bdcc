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
from datetime import timedelta

from funnel.clock import from_millis, to_millis
from funnel.config import CoreConfig
from funnel.corrections import corrections
from funnel.events import Event
from funnel.facts import EventRow, Fact, PersonRow
from funnel.profile import REGULAR_PAYMENTS, Profile, apply_event, cooled, person_row
from funnel.progression import IN_WINDOW, deadline

__all__ = [
    "REGULAR_PAYMENTS",
    "CoreConfig",
    "PersonState",
    "Profile",
    "expire",
    "merge",
    "next_deadline",
    "process",
    "upgraded",
]

_MS = timedelta(milliseconds=1)


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
    definitions: dict[str, str] = field(default_factory=dict)
    """Per funnel, the fingerprint of the definition its progress was folded under
    (:attr:`funnel.funnels.FunnelSpec.fingerprint`; empty in a state saved before
    definitions were recorded, which is then rebuilt as if every funnel had changed)."""


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
        profile = Profile(event.site_id, who, at_ms, at_ms)
        state = PersonState(event.site_id, who, profile, definitions=_definitions(config))
    else:
        state = upgraded(state, config)
    if event.event_id in state.seen:
        state.outcome = "duplicate"
        return state, []
    _remember(state, event.event_id, at_ms, config)
    if not state.log or state.log[-1].order_key <= event.order_key:
        state.outcome = "applied"
        facts = apply_event(state.profile, event, config)
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
    facts = [row, *corrections(before.facts, after.facts), person_row(after.profile, config)]
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
        facts.extend(apply_event(profile, event, config))
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
    other = upgraded(other, config)
    into = upgraded(into, config) if into is not None else None
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
    state = PersonState(
        site_id,
        person_id,
        after.profile,
        log,
        base,
        seen,
        "merged",
        definitions=_definitions(config),
    )
    state.row_at_ms = max(other.row_at_ms, into.row_at_ms if into is not None else 0)
    _trim(state, config)
    gone = replace(
        person_row(other.profile, config),
        merged_into=person_id,
        updated_at=from_millis(max(other.profile.last_seen_ms, other.row_at_ms + 1)),
    )
    facts = [*corrections(before, after.facts), person_row(after.profile, config)]
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
    state = upgraded(state, config)
    lapsed = cooled(state.profile, now_ms, config)
    row = person_row(state.profile, config, now_ms)
    if row.funnel_status == state.statuses and not lapsed:
        return state, []
    changed_at = max(
        (
            *(due for _, due in _deadlines(state.profile, config) if due < now_ms),
            *(to_millis(change.changed_at) for change in lapsed),
        ),
        default=state.profile.last_seen_ms,
    )
    row = replace(row, updated_at=from_millis(max(changed_at, state.profile.last_seen_ms)))
    return state, [*lapsed, *_stamped(state, [row])]


def next_deadline(state: PersonState, config: CoreConfig) -> int | None:
    """When :func:`expire` next has something to say about this person (``None``: never)."""
    state = upgraded(state, config)
    dues = [
        due + 1
        for name, due in _deadlines(state.profile, config)
        if state.statuses.get(name) == IN_WINDOW
    ]
    cooling = state.profile.lead.next_cooling_ms()
    return min([*dues, cooling] if cooling is not None else dues, default=None)


def upgraded(state: PersonState, config: CoreConfig) -> PersonState:
    """``state`` under the configured funnel definitions (DESIGN §9a: versioned state).

    A funnel whose definition changed since the person's progress was folded (steps added,
    removed or renamed, window or mode changed), a funnel added, or one removed: its progress
    is dropped from the base and the profile is folded again from the log. When the log holds
    the person's whole history (no base), the progress is exactly what a first run under the
    new definition gives; otherwise it restarts from the oldest logged event. Nothing is
    emitted for the past: the facts already landed stay as they were (``funnel reprocess``
    re-derives them), and the person's next row carries the rebuilt levels.
    """
    current = config.funnels.fingerprints
    if state.definitions == current:
        return state
    stale = {n for n in current if state.definitions.get(n) != current[n]}
    stale |= set(state.profile.funnels) - set(current)
    base = state.base
    if base is not None:
        base = copy.copy(base)
        base.funnels = {n: p for n, p in base.funnels.items() if n not in stale}
    state.base = base
    if state.log:
        state.profile = _fold(base, state.log, config, state.site_id, state.person_id).profile
    else:  # nothing logged to rebuild from: the stale funnels restart
        state.profile.funnels = {n: p for n, p in state.profile.funnels.items() if n not in stale}
    state.statuses = {n: s for n, s in state.statuses.items() if n in current}
    state.definitions = dict(current)
    return state


def _definitions(config: CoreConfig) -> dict[str, str]:
    return dict(config.funnels.fingerprints)


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


def _remember(state: PersonState, event_id: str, at_ms: int, config: CoreConfig) -> None:
    state.seen[event_id] = at_ms
    horizon = max(state.seen.values()) - int(config.dedup_horizon / _MS)
    if len(state.seen) > 64 and min(state.seen.values()) < horizon:
        state.seen = {e: t for e, t in state.seen.items() if t >= horizon}
