"""Compact, bounded person state (DESIGN §9a): log entries, marks, the bounds, the codec."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import funnel.processor as processor
from funnel.clock import from_micros
from funnel.codec import decode_state, encode_state
from funnel.events import Event
from funnel.facts import Fact
from funnel.processor import MAX_SEEN, CoreConfig, PersonState, process
from funnel.profile import MAX_OPEN_ORDERS, MAX_PAID_ORDERS
from tests.factories import fold, make_event

CONFIG = CoreConfig.default()
EVERY = CONFIG.checkpoint_every


class _Applies:
    """Counts the events the fold applies (the core's unit of work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = processor.apply_entry

        def counted(*args: Any) -> Any:
            self.count += 1
            return real(*args)

        monkeypatch.setattr(processor, "apply_entry", counted)


def _buyer(n: int) -> list[Event]:
    """A customer who clicks, orders and pays ``n`` times, a minute apart."""
    events = [make_event("lead", 0, person="big", customer_id="c-big")]
    for i in range(n):
        at = timedelta(minutes=3 * i + 1)
        kind = ("click", "order", "payment")[i % 3]
        extra: dict[str, Any] = {"context": {"utm_medium": "email"}} if kind == "click" else {}
        if kind != "click":
            extra |= {"order_id": f"o{i // 3}"}
        if kind == "payment":
            extra |= {"revenue": "10.00", "currency": "EUR"}
        events.append(make_event(kind, at, person="big", customer_id="c-big", **extra))
    return events


def test_a_customer_with_ten_thousand_payments_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory and work per event do not grow with the history (DESIGN §9a: the bound)."""
    events = _buyer(30_000)  # 10,000 payments
    applies = _Applies(monkeypatch)
    state: PersonState | None = None
    sizes = {}
    for i, event in enumerate(events, 1):
        state, _ = process(state, event, CONFIG)
        if i in (3_001, 30_001):
            sizes[i] = len(encode_state(state))
            applies_at = applies.count
    assert state is not None
    assert state.profile.payments == 10_000
    assert applies.count == len(events), "in order, every event is folded once"
    assert applies_at == len(events)
    assert len(state.log) <= CONFIG.max_log
    assert len(state.marks) == len(state.log) // EVERY
    assert len(state.seen) <= MAX_SEEN + 64
    assert len(state.profile.paid_orders) <= MAX_PAID_ORDERS
    assert len(state.profile.lead.open_orders) <= MAX_OPEN_ORDERS
    assert len(state.profile.touches) <= CONFIG.max_touches
    assert sizes[30_001] <= sizes[3_001] * 1.1, sizes


def _history(n: int) -> list[Event]:
    kinds = ["impression", "click", "impression", "lead", "order", "payment"]
    return [
        make_event(
            kinds[i % len(kinds)],
            timedelta(minutes=i),
            customer_id="c1",
            order_id=f"o{i}",
            **({"revenue": "5", "currency": "USD"} if kinds[i % len(kinds)] == "payment" else {}),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("back", [1, 5, EVERY + 3])
def test_a_late_event_is_folded_again_from_the_mark_before_it(
    monkeypatch: pytest.MonkeyPatch, back: int
) -> None:
    """An event that belongs ``back`` places before the end is folded from the mark before
    its place (the events after its place twice: what was, what is), not the whole log of
    200."""
    events = _history(CONFIG.max_log)
    state: PersonState | None = None
    for event in events:
        state, _ = process(state, event, CONFIG)
    assert state is not None
    logged = len(state.log)
    assert logged >= CONFIG.max_log - EVERY
    place = logged - back
    at = state.log[place].at_us - 1  # just before the entry now at ``place``
    late = make_event("click", from_micros(at), customer_id="c1")
    applies = _Applies(monkeypatch)
    state, facts = process(state, late, CONFIG)
    assert state.outcome == "reordered"
    offset = (place // EVERY) * EVERY  # the mark before the event's place
    # From the mark to the place once; from the place, the old log and the new one.
    assert applies.count == (place - offset) + 2 * (logged - place) + 1
    assert applies.count <= EVERY + 2 * back + 1
    assert facts[0].table == "events"


def _run(events: list[Event], config: CoreConfig = CONFIG) -> tuple[PersonState, list[Fact]]:
    return fold(events, config)


def test_any_arrival_order_gives_the_same_state_with_marks() -> None:
    """Marks, trims and refolds from marks: every arrival order of a long history ends in
    the same profile (a log of 40 with marks every 4 exercises all of them)."""
    small = CoreConfig(CONFIG.channels, CONFIG.funnels, max_log=40, checkpoint_every=4)
    events = _history(120)
    ordered, _ = _run(events, small)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = list(events)  # late only within the window the log still holds
        for i in range(len(shuffled) - 1):
            if rng.random() < 0.3:
                j = min(len(shuffled) - 1, i + rng.randint(1, 8))
                shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
        state, _ = _run(shuffled, small)
        assert state.profile == ordered.profile
        assert len(state.marks) == len(state.log) // 4


def _objects(value: Any) -> Any:
    """Structs as dicts, all the way down."""
    if isinstance(value, msgspec.Struct):
        return {name: _objects(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [_objects(v) for v in value]
    if isinstance(value, dict):
        return {k: _objects(v) for k, v in value.items()}
    return value


def _legacy_json(state: PersonState, events: list[Event]) -> bytes:
    """``state`` as earlier versions saved it: JSON, with whole events in the log, structs as
    JSON objects and no marks."""
    by_id = {e.event_id: e for e in events}
    legacy: dict[str, Any] = msgspec.to_builtins(_objects(state))
    legacy["log"] = [by_id[e.event_id].model_dump(mode="json") for e in state.log]
    del legacy["marks"]
    return json.dumps(legacy).encode()


def test_state_round_trips_through_the_codec_and_is_a_fraction_of_the_json_it_was() -> None:
    events = _history(60)
    state, _ = _run(events)
    data = encode_state(state)
    assert decode_state(data) == state
    assert len(data) < 0.4 * len(_legacy_json(state, events)), len(data)


def test_a_state_saved_as_json_by_an_earlier_version_still_loads() -> None:
    events = _history(40)
    state, _ = _run(events)
    loaded = decode_state(_legacy_json(state, events), CONFIG)
    assert loaded.log == state.log
    more = make_event("payment", timedelta(hours=2), customer_id="c1", order_id="x")
    after, _ = process(loaded, more, CONFIG)
    expected, _ = process(decode_state(encode_state(state)), more, CONFIG)
    assert after.profile == expected.profile
    assert len(after.marks) == len(after.log) // EVERY


def test_state_round_trips_through_json_as_a_hand_over_carries_it() -> None:
    """The Kafka person stage sends a device's state to its customer inside a JSON message
    (``absorb``): the state that arrives is the state that left."""
    from funnel.codec import state_from_builtins, state_to_builtins

    events = [
        *_history(40),
        make_event("lead", timedelta(hours=3), lead={"intent": "demo", "form": "trial"}),
    ]
    state, _ = _run(events)
    carried = json.loads(json.dumps(state_to_builtins(state)))
    assert state_from_builtins(carried, CONFIG) == state
