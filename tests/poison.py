"""A bug on demand (fault injection): the runtime raises on a poison event.

    python -m tests.poison <funnel arguments>

runs the funnel CLI with :func:`funnel.runtime.process` replaced: an event whose properties
hold ``fault = "poison"`` is applied (its person's state changes in place, as a bug midway
through would leave it) and then raises. The integration tests and the fault table run the
Kafka worker or ``funnel serve`` so, to show that a poison event goes to the dead-letter path
with its reason, that nothing of the state it half changed is kept, and that the pipeline
goes on. Only the runtime is replaced: Kafka, the store and the rest of the process are real.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import funnel.runtime
from funnel.events import Event

MARK = ("fault", "poison")
"""The property that makes an event poison here."""
REASON = "RuntimeError: a poison event (tests.poison)"

_process = funnel.runtime.process


def is_poison(event: Event) -> bool:
    return event.properties.get(MARK[0]) == MARK[1]


def poison_copy(payload: dict[str, Any]) -> dict[str, Any]:
    """A poison copy of a wire event: a new id, the mark among its properties. Were it
    applied, its person would count it (a conversion: stages and credits the truth lacks).
    The id is random: one drawn from a seeded generator could be a simulated event's."""
    properties = {**payload.get("properties", {}), MARK[0]: MARK[1]}
    return {**payload, "event_id": str(uuid.uuid4()), "properties": properties}


def _poisoned(state: Any, event: Event, *args: Any, **kwargs: Any) -> Any:
    result = _process(state, event, *args, **kwargs)  # the state is changed in place
    if is_poison(event):
        raise RuntimeError(REASON.partition(": ")[2])
    return result


def poisoned(events: list[Event], n: int, seed: int) -> dict[str, Event]:
    """Poison copies (:func:`poison_copy`) of ``n`` conversions among ``events``, by the id of
    the event each copies (to be sent right after it)."""
    rng = random.Random(seed)
    conversions = [e for e in events if e.type.value in ("lead", "order", "payment")]
    return {
        e.event_id: Event.model_validate(poison_copy(e.model_dump(mode="json")))
        for e in rng.sample(conversions, n)
    }


def install() -> None:
    """Make the runtime of this process raise on poison events."""
    funnel.runtime.process = _poisoned  # type: ignore[assignment]


if __name__ == "__main__":
    import sys

    from funnel.cli import main

    install()
    sys.argv[0] = "funnel"
    main()
