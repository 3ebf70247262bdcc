"""Issue 14: a funnel definition that changes between runs never crashes the runtime.

A person's saved state knows which definition of each funnel its progress was folded under.
Under another definition (a step added or removed, the window changed, a funnel added or
removed) that funnel's progress is rebuilt from the person's log: exactly what a first run
under the new definition gives when the log holds the whole history, and restarted from the
oldest logged event when older events were folded into the state's base (DESIGN §9a).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from funnel.codec import decode_state, encode_state
from funnel.events import Event
from funnel.funnels import FunnelCatalog
from funnel.processor import CoreConfig, PersonState, expire, next_deadline
from tests.factories import fold, make_event

BEFORE = CoreConfig.default()


def _catalog(change: Any) -> FunnelCatalog:
    funnels = BEFORE.funnels.model_dump(by_alias=True)["funnel"]
    change({f["name"]: f for f in funnels})
    return FunnelCatalog.model_validate({"funnel": funnels})


def _add_step(funnels: dict[str, Any]) -> None:
    funnels["sales"]["steps"] = [
        *funnels["sales"]["steps"][:2],
        {"name": "signup", "type": "lead"},
        *funnels["sales"]["steps"][2:],
    ]


def _remove_step(funnels: dict[str, Any]) -> None:
    funnels["sales"]["steps"] = funnels["sales"]["steps"][::2]


def _shorter_window(funnels: dict[str, Any]) -> None:
    funnels["sales"]["window"] = "1h"


def _add_funnel(funnels: dict[str, Any]) -> None:
    funnels["checkout"] = {
        "name": "checkout",
        "window": "2d",
        "steps": [{"name": "order", "type": "order"}, {"name": "payment", "type": "payment"}],
    }


def _remove_funnel(funnels: dict[str, Any]) -> None:
    del funnels["aida"]


CHANGES = [_add_step, _remove_step, _shorter_window, _add_funnel, _remove_funnel]


def _journey() -> list[Event]:
    return [
        make_event("impression", 0),
        make_event("click", timedelta(minutes=5)),
        make_event("lead", timedelta(hours=2), customer_id="c1"),
        make_event("order", timedelta(hours=3), customer_id="c1", order_id="o1"),
        make_event(
            "payment",
            timedelta(days=1),
            customer_id="c1",
            order_id="o1",
            revenue=10,
            currency="EUR",
        ),
    ]


def _run(events: list[Event], config: CoreConfig, state: PersonState | None = None) -> PersonState:
    return fold(events, config, state)[0]


def _saved(state: PersonState) -> PersonState:
    return decode_state(encode_state(state))


def _funnels(state: PersonState) -> dict[str, Any]:
    return {name: (p.level, p.chain) for name, p in state.profile.funnels.items()}


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__.strip("_"))
def test_progress_is_rebuilt_from_the_log_under_the_new_definition(change: Any) -> None:
    after = replace(BEFORE, funnels=_catalog(change))
    journey = _journey()
    state = _saved(_run(journey[:3], BEFORE))
    state = _run(journey[3:], after, state)
    assert _funnels(state) == _funnels(_run(journey, after))
    assert set(state.profile.funnels) <= {spec.name for spec in after.funnels.specs}


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__.strip("_"))
def test_the_timer_and_deadlines_take_a_saved_state_under_a_new_definition(change: Any) -> None:
    after = replace(BEFORE, funnels=_catalog(change))
    journey = _journey()
    state = _saved(_run(journey[:2], BEFORE))
    due = next_deadline(state, after)
    assert due is not None
    state, facts = expire(state, due + 1, after)
    rows = [f for f in facts if f.table == "persons"]
    assert all(set(r.funnel_status) <= {s.name for s in after.funnels.specs} for r in rows)
    assert _funnels(state) == _funnels(_run(journey[:2], after))


def test_progress_restarts_from_the_log_when_older_events_left_it() -> None:
    """With a short log the oldest events are folded into the base: a changed funnel's
    progress then restarts from the events the log still holds, as documented."""
    small = replace(BEFORE, max_log=2)
    journey = _journey()
    state = _saved(_run(journey[:3], small))
    assert state.base is not None
    after = replace(small, funnels=_catalog(_add_step))
    state = _run(journey[3:], after, state)
    logged = {entry.event_id for entry in state.log}
    expected = _run([e for e in journey if e.event_id in logged], after)  # those, from scratch
    assert state.profile.funnels["sales"].level == expected.profile.funnels["sales"].level
    assert state.profile.funnels["aida"] == _run(journey, after).profile.funnels["aida"]
