"""The Kafka person stage's table values: a person's state with its next deadline in one
changelog record (the tick reads the deadline without decoding the state)."""

from __future__ import annotations

from funnel.codec import decode_state, encode_state
from funnel.processor import CoreConfig, next_deadline, process
from stream_processors.agents import (
    _HELD,
    _MOVED,
    _due_of,
    _Saved,
    _split_held,
    _state_of,
    _with_held,
)
from tests.factories import make_event

CONFIG = CoreConfig.default()


def test_a_value_carries_the_state_and_its_deadline_and_reads_older_values() -> None:
    state, _ = process(None, make_event("impression", 0), CONFIG)
    due = next_deadline(state, CONFIG)
    assert due is not None

    stored = _Saved(state, due).encode()
    assert _due_of(stored, CONFIG) == due
    assert decode_state(stored, CONFIG) == state
    assert _due_of(_Saved(state, None).encode(), CONFIG) is None

    older = encode_state(state)  # a value written before the deadline moved into it
    assert decode_state(older, CONFIG) == state
    assert _due_of(older, CONFIG) == due
    assert _due_of(_MOVED + b"s:customer", CONFIG) is None


def test_events_held_for_a_device_travel_in_the_same_value_as_the_state() -> None:
    """A crash keeps the held events and the state together or neither: one value."""
    state, _ = process(None, make_event("impression", 0), CONFIG)
    due = next_deadline(state, CONFIG)
    entry = {
        "for": ["s:a:phone"],
        "held": [{"kind": "event"}],
        "absorbs": {},
        "ticks": 1,
        "answered": [],
    }

    stored = _Saved(state, due, entry).encode()
    assert stored.startswith(_HELD)
    held, data = _split_held(stored)
    assert held == entry
    assert decode_state(data, CONFIG) == state
    assert _state_of(stored) == data
    assert _due_of(stored, CONFIG) == due

    fresh = _with_held(entry, b"")  # a customer new to the partition: events held, no state
    assert _split_held(fresh) == (entry, b"")
    assert _due_of(fresh, CONFIG) is None
    plain = _Saved(state, due).encode()
    assert _split_held(plain) == (None, plain)
    assert _with_held(None, plain) == plain
