"""Attribution facts in ClickHouse: exact sums per conversion, and the ground truth by channel."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from funnel.processor import CoreConfig
from producers.simulator import simulate
from storage.backends import ChdbStore
from stream_processors.embedded import EmbeddedPipeline


def test_credits_sum_to_one_and_first_touch_matches_the_truth(store: ChdbStore) -> None:
    sim = simulate(3000, seed=17, site_id="attr")
    pipeline = EmbeddedPipeline(store, CoreConfig.default())
    pipeline.submit_all(sim.events)
    pipeline.flush()
    db = store.database

    [worst] = store.query(
        f"SELECT max(abs(s - 1)) AS off, count() AS groups FROM ("
        f"SELECT conversion_id, model, sum(credit) AS s FROM {db}.attributions "
        "GROUP BY conversion_id, model)"
    )
    conversions = [e for e in sim.events if e.type.value in ("lead", "order", "payment", "repeat")]
    assert worst["groups"] == 7 * len(conversions)
    assert worst["off"] <= 1e-9

    [money] = store.query(
        f"SELECT count() AS bad FROM (SELECT a.conversion_id, a.model, sum(a.revenue_credit) AS r, "
        f"any(e.revenue) AS revenue FROM {db}.attributions AS a "
        f"JOIN {db}.events AS e ON e.event_id = a.conversion_id "
        "GROUP BY a.conversion_id, a.model HAVING r != revenue)"
    )
    assert money["bad"] == 0

    # The truth: the channel the simulator sent each conversion's first touch within the
    # 30-day lookback through (Direct when there is none).
    truth: Counter[str] = Counter()
    for person in sim.truth.persons.values():
        touches = [e for e in person.events if e.event_id in person.touch_channels]
        for conversion in person.events:
            if conversion.type.value not in ("lead", "order", "payment", "repeat"):
                continue
            start = conversion.occurred_at - timedelta(days=30)
            path = [t for t in touches if start <= t.occurred_at <= conversion.occurred_at]
            truth[person.touch_channels[path[0].event_id] if path else "Direct"] += 1
    rows = store.query(
        f"SELECT channel, sum(credit) AS c FROM {db}.attributions "
        "WHERE model = 'first_touch' GROUP BY channel"
    )
    assert {r["channel"]: round(r["c"], 6) for r in rows} == {
        channel: float(n) for channel, n in truth.items() if n
    }
