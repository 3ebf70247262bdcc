"""Ordered funnel progression equals the windowFunnel definition."""

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.events import EventType
from funnel.funnels import FunnelCatalog, FunnelSpec
from funnel.processor import CoreConfig, process
from funnel.progression import FunnelProgress, advance
from producers.ground_truth import reference_level
from tests.factories import make_event

TYPES = list(EventType)
WINDOW = timedelta(hours=1)
SPEC = FunnelSpec.model_validate(
    {"name": "f", "window": "1h", "steps": [{"name": t.value, "type": t} for t in TYPES]}
)
HOUR_MS = 3_600_000


def levels_of(steps_at: list[tuple[int, int]], window_ms: int = HOUR_MS, n: int = 6) -> int:
    progress = FunnelProgress.empty(n)
    for step, at in steps_at:
        advance(progress, at, [step], window_ms)
    return progress.level


def test_chain_within_window() -> None:
    assert levels_of([(0, 0), (1, 10), (2, 20)]) == 3


def test_step_outside_window_of_chain_start_stops_the_chain() -> None:
    assert levels_of([(0, 0), (1, 10), (2, HOUR_MS + 1)]) == 2
    assert levels_of([(0, 0), (1, 10), (2, HOUR_MS)]) == 3  # the bound is inclusive


def test_later_start_gives_a_fresh_window() -> None:
    # A second impression restarts the chain; the lead is within an hour of it.
    assert levels_of([(0, 0), (0, HOUR_MS), (1, HOUR_MS + 5), (2, HOUR_MS + 10)]) == 3


def test_steps_out_of_order_do_not_count() -> None:
    assert levels_of([(1, 0), (0, 10), (2, 20)]) == 1


def test_each_step_is_reported_once() -> None:
    progress = FunnelProgress.empty(3)
    assert advance(progress, 0, [0], 100) == [0]
    assert advance(progress, 5, [1], 100) == [1]
    assert advance(progress, 6, [0], 100) == []
    assert advance(progress, 7, [1], 100) == []
    assert advance(progress, 8, [2], 100) == [2]


events_strategy = st.lists(
    st.tuples(st.sampled_from(TYPES), st.integers(min_value=0, max_value=4 * HOUR_MS)),
    max_size=25,
    unique_by=lambda t: t[1],
)


@settings(max_examples=400, deadline=None)
@given(events_strategy)
def test_streaming_level_equals_the_definition(history: list[tuple[EventType, int]]) -> None:
    events = [make_event(kind, at) for kind, at in history]
    config = CoreConfig(
        channels=CoreConfig.default().channels, funnels=FunnelCatalog(specs=(SPEC,))
    )
    state = None
    for event in sorted(events, key=lambda e: e.order_key):
        state, _ = process(state, event, config)
    level = state.profile.funnels["f"].level if state and "f" in state.profile.funnels else 0
    assert level == reference_level(events, SPEC)
