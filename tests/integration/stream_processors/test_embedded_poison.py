"""A poison event (one the runtime raises on) in the embedded runner: dead-lettered with its
reason, the state it half changed dropped, the batch's other events landed exactly once
(issue 19). The runtime's bug is injected by :mod:`tests.poison`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import funnel.runtime
from funnel.intake import POISON
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline
from stream_processors.state import SavedState
from tests import poison
from tests.integration.stream_processors.test_kafka_pipeline import assert_landed_exactly

SITE = "poison-embedded"


@pytest.fixture
def buggy_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(funnel.runtime, "process", poison._poisoned)


@pytest.mark.usefixtures("buggy_runtime")
@pytest.mark.parametrize("batch_size", [20_000, 400], ids=["one-batch", "many-batches"])
def test_a_poison_event_is_dead_lettered_and_the_rest_lands_once(
    store: ChdbStore, tmp_path: Path, batch_size: int
) -> None:
    config = CoreConfig.default()
    sim = simulate(300, seed=11, site_id=SITE, multi_device=0.5)
    copies = poison.poisoned(sim.events, 5, seed=11)
    saved = SavedState(tmp_path / "state.db", config=config)
    pipeline = EmbeddedPipeline(store, config, saved=saved, batch_size=batch_size)
    refused = []
    for event in sim.events:
        assert pipeline.submit(event) is True
        if event.event_id in copies:
            assert pipeline.submit(copies[event.event_id]) is False
        if event.event_id in list(copies)[:2]:  # some flushed alone, some with others
            refused += pipeline.flush()
    refused += pipeline.flush()
    pipeline.close()
    saved.close()

    assert pipeline.poisoned == len(copies)
    assert {r.row["event_id"] for r in refused} == {c.event_id for c in copies.values()}
    assert {r.error["code"] for r in refused} == {POISON}
    # Nothing of the poison events, and every other event once: rows, stages, credits.
    assert_landed_exactly(store, sim, SITE)
    letters = store.query(f"SELECT reason, payload FROM {store.database}.rejected_events")
    assert sorted(json.loads(r["payload"])["event_id"] for r in letters) == sorted(
        c.event_id for c in copies.values()
    )
    for letter in letters:
        [error] = json.loads(letter["reason"])
        assert error == {"field": "$runtime", "reason": poison.REASON, "code": POISON}


@pytest.mark.usefixtures("buggy_runtime")
def test_an_in_memory_state_lets_the_error_through(store: ChdbStore) -> None:
    # Its cache is the state: no committed copy to go back to.
    config = CoreConfig.default()
    sim = simulate(100, seed=12, site_id=SITE)
    [copy] = poison.poisoned(sim.events, 1, seed=12).values()
    pipeline = EmbeddedPipeline(store, config)
    with pytest.raises(RuntimeError, match="poison"):
        pipeline.submit(copy)
