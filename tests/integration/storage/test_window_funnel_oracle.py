"""The streaming ordered-funnel level equals ClickHouse windowFunnel over the stored events.

The oracle is the real ClickHouse engine (chDB): events land in ``events`` through the
embedded pipeline, and :func:`storage.reports.raw_levels` runs ``windowFunnel`` over them.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from funnel.events import Event, EventType
from funnel.funnels import FunnelCatalog
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.reports import raw_levels, stage_counts
from stream_processors.embedded import EmbeddedPipeline
from tests.factories import T0

CONFIG = CoreConfig.default()
SALES = CONFIG.funnels.get("sales")


def streamed_levels(pipeline: EmbeddedPipeline, funnel: str) -> dict[str, int]:
    return {
        state.person_id: state.profile.funnels[funnel].level
        if funnel in state.profile.funnels
        else 0
        for state in pipeline.persons().values()
    }


@pytest.mark.parametrize("seed", [11, 23, 47])
def test_simulated_population_matches_window_funnel(store: ChdbStore, seed: int) -> None:
    sim = simulate(2500, seed=seed, site_id=f"oracle{seed}")
    assert len(sim.events) >= 3500  # three seeds: well over 10k events in all
    pipeline = EmbeddedPipeline(store, CONFIG)
    pipeline.submit_all(sim.events)
    pipeline.flush()

    oracle = raw_levels(store, SALES)
    streamed = streamed_levels(pipeline, "sales")
    assert len(oracle) == len(sim.truth.persons)
    mismatches = {
        p: (streamed.get(p), level) for p, level in oracle.items() if streamed.get(p) != level
    }
    assert mismatches == {}
    # A person known as a customer is stitched under the customer id.
    truth = {p.customer_id or p.person_id: p.levels["sales"] for p in sim.truth.persons.values()}
    assert streamed == truth
    # The stage facts the pipeline stored give the same step counts as the ground truth.
    assert stage_counts(store, SALES) == sim.truth.step_counts("sales")
    assert max(oracle.values()) == len(SALES.steps)  # every level is exercised


def adversarial_history(rng: random.Random, person: str, window: timedelta) -> list[Event]:
    """Dense random histories: restarts, repeats and gaps around the window's edge."""
    span_ms = int(window.total_seconds() * 1000 * rng.choice([0.5, 1.5, 3]))
    times = rng.sample(range(span_ms), rng.randint(1, 14))
    kinds = list(EventType)
    return [
        Event(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            type=rng.choice(kinds[: rng.randint(2, len(kinds))]),
            site_id="adv",
            anonymous_id=person,
            occurred_at=T0 + timedelta(milliseconds=at),
            seq=i,
        )
        for i, at in enumerate(sorted(times))
    ]


@pytest.mark.parametrize(
    ("mode", "steps"),
    [
        ("ordered", ["impression", "click", "lead", "order", "payment", "repeat"]),
        ("strict", ["impression", "click", "lead", "order"]),
        ("any", ["impression", "click", "lead", "order"]),
    ],
)
def test_adversarial_histories_match_clickhouse(
    store: ChdbStore, mode: str, steps: list[str]
) -> None:
    rng = random.Random(2026)
    short = FunnelCatalog.model_validate(
        {
            "funnel": [
                {
                    "name": "f",
                    "window": "2h",
                    "mode": mode,
                    "steps": [{"name": s, "type": s} for s in steps],
                }
            ]
        }
    )
    config = CoreConfig(channels=CONFIG.channels, funnels=short)
    spec = short.get("f")
    events = [e for n in range(3000) for e in adversarial_history(rng, f"p{n}", spec.window)]
    assert len(events) >= 10_000
    pipeline = EmbeddedPipeline(store, config)
    pipeline.submit_all(events)
    pipeline.flush()
    oracle = raw_levels(store, spec)
    streamed = streamed_levels(pipeline, "f")
    assert {p: streamed.get(p, 0) for p in oracle} == oracle
    assert len(set(oracle.values())) >= 4  # shallow and deep levels alike
