"""The per-person transition: facts out of events."""

from datetime import timedelta

from funnel.events import EventType
from funnel.facts import EventRow, StageReached
from funnel.processor import CoreConfig, PersonState, process
from funnel.serialization import state_from_json, state_to_json
from tests.factories import make_event

CONFIG = CoreConfig.default()


def run(events: list) -> tuple[PersonState, list]:  # type: ignore[type-arg]
    state, facts = None, []
    for event in events:
        state, out = process(state, event, CONFIG)
        facts.extend(out)
    assert state is not None
    return state, facts


def test_stage_facts_carry_times_and_last_touch() -> None:
    events = [
        make_event("impression", 0, context={"utm_medium": "email", "utm_campaign": "w1"}),
        make_event("click", timedelta(minutes=5), context={"gclid": "g", "utm_campaign": "b"}),
        make_event("lead", timedelta(hours=2), customer_id="c1"),
    ]
    state, facts = run(events)
    stages = [f for f in facts if isinstance(f, StageReached)]
    assert [(s.step, s.step_index, s.channel, s.campaign) for s in stages] == [
        ("impression", 1, "Email", "w1"),
        ("click", 2, "Paid Search", "b"),
        ("lead", 3, "Paid Search", "b"),
    ]
    assert all(s.entered_at == events[0].occurred_at for s in stages)
    assert stages[2].reached_at == events[2].occurred_at
    rows = [f for f in facts if isinstance(f, EventRow)]
    assert [r.channel for r in rows] == ["Email", "Paid Search", "Paid Search"]
    assert rows[2].customer_id == "c1"
    assert state.funnels["sales"].level == 3


def test_repeated_steps_do_not_repeat_facts() -> None:
    events = [make_event("impression", i * 1000) for i in range(3)]
    _, facts = run(events)
    assert sum(isinstance(f, StageReached) for f in facts) == 1
    assert sum(isinstance(f, EventRow) for f in facts) == 3


def test_state_round_trips_through_json() -> None:
    state, _ = run(
        [
            make_event(EventType.IMPRESSION, 0, context={"fbclid": "f"}),
            make_event(EventType.CLICK, 10),
        ]
    )
    assert state_from_json(state_to_json(state)) == state
