"""Merging a device's anonymous person into its customer (:func:`funnel.processor.merge`)."""

from __future__ import annotations

from funnel.facts import Fact, PersonRow, StageReached
from funnel.processor import CoreConfig, PersonState, merge, process
from tests.factories import make_event

CONFIG = CoreConfig.default()


def _run(person_id: str, events: list) -> tuple[PersonState, list[Fact]]:  # type: ignore[type-arg]
    state, facts = None, []
    for event in events:
        state, made = process(state, event, CONFIG, person_id)
        facts += made
    assert state is not None
    return state, facts


def test_a_merge_retracts_the_devices_facts_even_when_the_customer_saw_its_events() -> None:
    """Kafka mode after a crash: the route stage replays a device's events with the device's
    link restored, so they reach the customer's person before the hand-over does. The merge
    must still retract what the device's person landed (once), and a replayed hand-over must
    change nothing."""
    events = [make_event("impression", n * 1000, person="dev") for n in range(3)]
    events.append(make_event("click", 5000, person="dev"))
    device, device_facts = _run("dev", events)
    customer, _ = _run("cust", events)  # the replayed events, applied under the customer

    merged, facts = merge(customer, device, CONFIG, "cust")

    gone = [f for f in facts if isinstance(f, PersonRow) and f.merged_into]
    assert [(g.person_id, g.merged_into) for g in gone] == [("dev", "cust")]
    landed = sorted((f.funnel, f.step_index) for f in device_facts if isinstance(f, StageReached))
    retracted = sorted(
        (f.funnel, f.step_index)
        for f in facts
        if isinstance(f, StageReached) and f.person_id == "dev" and f.sign == -1
    )
    assert landed
    assert retracted == landed
    assert not [f for f in facts if isinstance(f, StageReached) and f.person_id == "cust"]
    assert merged.absorbed == ["dev"]

    again, more = merge(merged, device, CONFIG, "cust")  # the hand-over, replayed
    assert more == []
    assert again.profile == merged.profile
