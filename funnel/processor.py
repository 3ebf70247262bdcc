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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from msgspec.structs import replace

from funnel.channels import Touch
from funnel.clock import from_millis, to_millis
from funnel.config import CoreConfig
from funnel.corrections import corrections
from funnel.events import Event
from funnel.facts import Fact, LeadChange, PersonRow
from funnel.profile import (
    REGULAR_PAYMENTS,
    Entry,
    Profile,
    apply_entry,
    cooled,
    entry_of,
    event_row,
)
from funnel.profile import person_row as profile_row
from funnel.progression import IN_WINDOW, deadline

__all__ = [
    "MAX_SEEN",
    "REGULAR_PAYMENTS",
    "CoreConfig",
    "PersonState",
    "Profile",
    "expire",
    "merge",
    "next_deadline",
    "person_row",
    "process",
    "upgraded",
]

_MS = timedelta(milliseconds=1)
MAX_ABSORBED = 256
"""Merged persons a person remembers (see :attr:`PersonState.absorbed`)."""
MAX_SEEN = 1024
"""Applied event ids a person remembers (within the dedup horizon, the most recent). Older
duplicates are the host's to catch: the runtime keeps applied ids across persons
(:class:`funnel.runtime.StateReader`)."""


class PersonState(msgspec.Struct, array_like=True, gc=False):
    """Everything the pipeline remembers about one person.

    ``log`` is the person's recent events (compact :class:`~funnel.profile.Entry` items) in
    their total order; ``profile`` is the fold of ``base`` (the fold of the events that left
    the log, or nothing) and ``log``. ``marks[i]`` is the fold of ``base`` and the first
    ``(i + 1) * K`` logged events (``K``: ``config.checkpoint_every``), so an event that
    arrives out of order is folded again from the nearest mark before it, not from the
    start. Bounded: the log holds at most ``config.max_log`` events (the oldest ``K`` at a
    time become the base, which is the first mark), ``seen`` at most :data:`MAX_SEEN` ids.
    """

    site_id: str
    person_id: str
    profile: Profile
    log: list[Entry] = msgspec.field(default_factory=list)
    base: Profile | None = None
    seen: dict[str, int] = msgspec.field(default_factory=dict)
    """Applied event ids → their time, within the dedup horizon of the last event."""
    outcome: str = "applied"
    """How the last event was taken: ``applied``, ``reordered``, ``late`` or ``duplicate``."""
    statuses: dict[str, str] = msgspec.field(default_factory=dict)
    """Per funnel, the status the person's last row said (see :func:`expire`)."""
    row_at_ms: int = 0
    """The ``updated_at`` of the person's last row: every later row is later still."""
    definitions: dict[str, str] = msgspec.field(default_factory=dict)
    """Per funnel, the fingerprint of the definition its progress was folded under
    (:attr:`funnel.funnels.FunnelSpec.fingerprint`; empty in a state saved before
    definitions were recorded, which is then rebuilt as if every funnel had changed)."""
    marks: list[Profile] = msgspec.field(default_factory=list)
    """Checkpoints of the fold every ``K`` logged events (see above)."""
    lead_at_ms: int = 0
    """The ``changed_at`` of the person's last lead change: every later one is later still
    (the current temperature is the latest change), even when a late event changes the
    temperature from earlier on."""
    absorbed: list[str] = msgspec.field(default_factory=list)
    """The persons merged into this one (:func:`merge`; the :data:`MAX_ABSORBED` most
    recent): a hand-over replayed after a crash is recognised by them, not by its events."""


def process(
    state: PersonState | None,
    event: Event,
    config: CoreConfig,
    person_id: str | None = None,
    *,
    row: bool = True,
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
    device, else its customer). ``row=False`` leaves the person's row out (a host that emits
    it once per batch: :func:`person_row`).
    """
    if state is None:
        who = person_id or event.person_id
        at_ms = to_millis(event.occurred_at)
        profile = Profile(event.site_id, who, at_ms, at_ms)
        state = PersonState(event.site_id, who, profile, definitions=_definitions(config))
    else:
        state = upgraded(state, config)
    if event.event_id in state.seen:
        state.outcome = "duplicate"
        return state, []
    entry = entry_of(event, config)
    _remember(state, entry, config)
    log = state.log
    if not log or log[-1].order_key <= entry.order_key:
        state.outcome = "applied"
        touch, facts = apply_entry(state.profile, entry, config)
        log.append(entry)
        every = _every(config)
        if len(log) % every == 0:
            state.marks.append(state.profile.clone())
        if len(log) > config.max_log:
            _trim(state, config)
        own = event_row(event, state.person_id, touch)
        if entry.bot:
            return state, [own]
        facts.insert(0, own)
        if row:
            facts.append(profile_row(state.profile, config))
        return state, _stamped(state, facts)
    late = log[-1].at_ms - entry.at_ms > config.lateness / _MS
    state.outcome = "late" if late else "reordered"
    # Fold the events from the last mark up to the event's place once (their facts do not
    # change); from there, what was folded (before) against what is folded now (after): the
    # difference is corrected.
    at = bisect.bisect_right(log, entry.order_key, key=_order_key)
    every = _every(config)
    kept = at // every
    start = state.marks[kept - 1] if kept else state.base
    offset = kept * every
    middle = _copy(start)
    if at > offset:
        middle = _fold(middle, log[offset:at], config, state.site_id, state.person_id).profile
    before = _fold(_copy(middle), log[at:], config, state.site_id, state.person_id)
    log.insert(at, entry)
    del state.marks[kept:]
    after = _fold(
        middle,
        log[at:],
        config,
        state.site_id,
        state.person_id,
        target=entry.event_id,
        marks=(state.marks, at, every),
    )
    was = middle.temperature if middle is not None else ""
    state.profile = after.profile
    _trim(state, config)
    assert after.touch is not None, "the event is in the part folded again"
    own = event_row(event, state.person_id, after.touch)
    if entry.bot:
        return state, [own]
    facts = [own, *corrections(before.facts, after.facts, temperature=was)]
    if row:
        facts.append(profile_row(after.profile, config))
    return state, _stamped(state, facts)


def person_row(state: PersonState, config: CoreConfig) -> list[Fact]:
    """The person's row as of their latest event, versioned after every row before it."""
    return _stamped(state, [profile_row(state.profile, config)])


def _order_key(entry: Entry) -> tuple[int, int, str]:
    return entry.order_key


def _every(config: CoreConfig) -> int:
    """The distance between marks (never more than the log holds)."""
    return max(1, min(config.checkpoint_every, config.max_log))


def _copy(profile: Profile | None) -> Profile | None:
    return profile.clone() if profile is not None else None


@dataclass(slots=True)
class _Derived:
    profile: Profile
    facts: list[Fact]
    touch: Touch | None = None
    """The touch of the target event (see :func:`_fold`)."""


def _fold(
    start: Profile | None,
    entries: Sequence[Entry],
    config: CoreConfig,
    site_id: str,
    person_id: str,
    *,
    target: str | None = None,
    marks: tuple[list[Profile], int, int] | None = None,
) -> _Derived:
    """The profile and the facts (besides event and person rows) of ``entries`` folded onto
    ``start`` (consumed), with the touch of the event ``target``. ``marks``: ``(marks,
    offset, every)`` appends a copy of the profile after every entry whose position in the
    log (``offset`` + its index + 1) is a multiple of ``every``."""
    profile = start
    facts: list[Fact] = []
    touch = None
    position = marks[1] if marks is not None else 0
    for entry in entries:
        if profile is None:
            at_ms = entry.at_us // 1000
            profile = Profile(site_id, person_id, at_ms, at_ms)
        found, made = apply_entry(profile, entry, config)
        facts.extend(made)
        if entry.event_id == target:
            touch = found
        if marks is not None:
            position += 1
            if position % marks[2] == 0:
                marks[0].append(profile.clone())
    assert profile is not None, "a person always has at least one event"
    return _Derived(profile, facts, touch)


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
    if into is not None and other.person_id in into.absorbed:
        return into, []  # merged before (a replayed hand-over): nothing changes
    # Not "every event of ``other`` is known to ``into``": after a crash, a replayed event of
    # the device can reach the customer directly (its link restored) before the hand-over
    # does; the merge must still retract what ``other`` landed.
    before = _fold(_copy(other.base), other.log, config, site_id, other.person_id).facts
    if into is not None:
        before += _fold(_copy(into.base), into.log, config, site_id, into.person_id).facts
    known = {e.event_id for e in into.log} if into is not None else set()
    log = sorted(
        [
            *(into.log if into is not None else []),
            *(e for e in other.log if e.event_id not in known),
        ],
        key=_order_key,
    )
    base = into.base if into is not None and into.base is not None else other.base
    marks: list[Profile] = []
    after = _fold(_copy(base), log, config, site_id, person_id, marks=(marks, 0, _every(config)))
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
        marks=marks,
    )
    absorbed = [*(into.absorbed if into is not None else []), *other.absorbed, other.person_id]
    state.absorbed = absorbed[-MAX_ABSORBED:]
    state.row_at_ms = max(other.row_at_ms, into.row_at_ms if into is not None else 0)
    state.lead_at_ms = max(other.lead_at_ms, into.lead_at_ms if into is not None else 0)
    _trim(state, config)
    gone = replace(
        profile_row(other.profile, config),
        merged_into=person_id,
        updated_at=from_millis(max(other.profile.last_seen_ms, other.row_at_ms + 1)),
    )
    facts = [*corrections(before, after.facts), profile_row(after.profile, config)]
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
    row = profile_row(state.profile, config, now_ms)
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
    return state, _stamped(state, [*lapsed, row])


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
    re-derives them), and the person's next row carries the rebuilt levels. Marks made at
    another distance (or none, in a state saved before marks) are made again.
    """
    current = config.funnels.fingerprints
    if state.definitions == current:
        if len(state.marks) != len(state.log) // _every(config):
            _refold(state, config)
        return state
    stale = {n for n in current if state.definitions.get(n) != current[n]}
    stale |= set(state.profile.funnels) - set(current)
    base = state.base
    if base is not None:
        base = base.clone()
        base.funnels = {n: p for n, p in base.funnels.items() if n not in stale}
    state.base = base
    if state.log:
        _refold(state, config)
    else:  # nothing logged to rebuild from: the stale funnels restart
        state.profile.funnels = {n: p for n, p in state.profile.funnels.items() if n not in stale}
    state.statuses = {n: s for n, s in state.statuses.items() if n in current}
    state.definitions = dict(current)
    return state


def _refold(state: PersonState, config: CoreConfig) -> None:
    """The profile and the marks folded again from the base and the whole log."""
    marks: list[Profile] = []
    every = _every(config)
    state.profile = _fold(
        _copy(state.base),
        state.log,
        config,
        state.site_id,
        state.person_id,
        marks=(marks, 0, every),
    ).profile
    state.marks = marks


def _definitions(config: CoreConfig) -> dict[str, str]:
    return dict(config.funnels.fingerprints)


def _deadlines(profile: Profile, config: CoreConfig) -> Iterator[tuple[str, int]]:
    """Per funnel the person entered and can still advance in: its deadline (epoch ms)."""
    funnels = profile.funnels
    for name, size, window_ms in config.funnels.shapes:
        progress = funnels.get(name)
        if progress is not None:
            due = deadline(progress, size, window_ms)
            if due is not None:
                yield name, due


def _stamped(state: PersonState, facts: list[Fact]) -> list[Fact]:
    """Version the person's rows after every row emitted before, and their lead changes
    after every change emitted before; remember what the rows said."""
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
        elif isinstance(fact, LeadChange) and fact.person_id == state.person_id:
            at_ms = to_millis(fact.changed_at)
            if at_ms <= state.lead_at_ms:
                at_ms = state.lead_at_ms + 1
                fact = replace(fact, changed_at=from_millis(at_ms))
            state.lead_at_ms = at_ms
        out.append(fact)
    return out


def _trim(state: PersonState, config: CoreConfig) -> None:
    """Keep the log bounded: beyond ``max_log`` events, the oldest ``K`` leave it and their
    fold (the first mark) becomes the base."""
    every = _every(config)
    while len(state.log) > config.max_log and state.marks:
        state.base = state.marks.pop(0)
        del state.log[:every]


def _remember(state: PersonState, entry: Entry, config: CoreConfig) -> None:
    """Note the event's id; now and then forget those beyond the dedup horizon, or beyond
    the :data:`MAX_SEEN` most recent."""
    seen = state.seen
    seen[entry.event_id] = entry.at_us // 1000
    if len(seen) < 128 or len(seen) % 64:
        return
    horizon = max(seen.values()) - int(config.dedup_horizon / _MS)
    kept = {e: t for e, t in seen.items() if t >= horizon}
    if len(kept) > MAX_SEEN:
        newest = sorted(kept.items(), key=lambda item: item[1])[-MAX_SEEN:]
        kept = dict(newest)
    state.seen = kept
