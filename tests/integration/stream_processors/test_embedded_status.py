"""The embedded runner's status timer, on the embedded engine (chDB)."""

from __future__ import annotations

from datetime import timedelta

from funnel.clock import ManualClock
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline


def test_expired_windows_turn_dropped_and_converted_people_stay_converted(
    store: ChdbStore,
) -> None:
    config = CoreConfig.default()
    sim = simulate(400, seed=3, site_id="status")
    last = max(e.occurred_at for e in sim.events)
    clock = ManualClock(last)
    pipeline = EmbeddedPipeline(store, config, clock=clock)
    pipeline.submit_all(sim.events)
    pipeline.expire()  # at the last event, the oldest windows have expired already
    clock.advance(timedelta(days=400))
    pipeline.expire()
    assert pipeline.expire() == 0  # said once
    pipeline.flush()

    current = store.query(
        "SELECT argMax(funnel_status, updated_at) AS status, "
        "argMax(funnel_levels, updated_at) AS levels, argMax(regular, updated_at) AS regular, "
        f"argMax(payments, updated_at) AS payments FROM {store.database}.persons "
        "WHERE site_id = 'status' GROUP BY person_id HAVING argMax(merged_into, updated_at) = ''"
    )
    steps = {spec.name: len(spec.steps) for spec in config.funnels.specs}
    statuses = set()
    for person in current:
        for name, level in person["levels"].items():
            expected = "converted" if level == steps[name] else "dropped"
            assert person["status"][name] == expected
            statuses.add(expected)
        assert person["regular"] == (person["payments"] >= 3)
    assert statuses == {"converted", "dropped"}
