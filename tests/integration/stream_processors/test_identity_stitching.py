"""Identity stitching in the embedded runner: devices merge into their customer's person."""

from __future__ import annotations

from funnel.funnels import FunnelCatalog
from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from storage.reports import raw_levels, stage_counts
from stream_processors.embedded import EmbeddedPipeline

SALES = FunnelCatalog.default().get("sales")


def test_multi_device_customers_are_one_person(store: ChdbStore) -> None:
    sim = simulate(2500, seed=41, site_id="stitch", multi_device=0.6)
    movers = [p for p in sim.truth.persons.values() if len(p.devices) > 1]
    assert len(movers) > 20
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    pipeline.submit_all(sim.events)
    pipeline.flush()

    truth = {p.customer_id or p.person_id: p.levels["sales"] for p in sim.truth.persons.values()}
    assert raw_levels(store, SALES, "stitch") == truth
    assert stage_counts(store, SALES, "stitch") == sim.truth.step_counts("sales")
    device_of = {e.event_id: e.anonymous_id for e in sim.events}
    for person in movers:  # one state per customer, holding both devices' events
        state = pipeline.person(f"stitch:c:{person.customer_id}")
        assert state is not None
        assert {device_of[e.event_id] for e in state.log} == set(person.devices)
    # No credit is counted twice: per conversion and model the credits sum to exactly 1.
    [worst] = store.query(
        f"SELECT max(abs(s - 1)) AS off FROM (SELECT conversion_id, model, sum(credit) AS s "
        f"FROM {store.database}.attributions GROUP BY conversion_id, model)"
    )
    assert worst["off"] <= 1e-9
    merged = store.query(
        f"SELECT count() AS n FROM {store.database}.persons FINAL WHERE merged_into != ''"
    )
    assert merged[0]["n"] == sum(1 for p in sim.truth.persons.values() if p.customer_id)
