"""Deduplication by event id within a horizon."""

from datetime import UTC, datetime, timedelta

from funnel.dedup import RecentIds

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def test_a_repeated_id_is_refused_and_state_round_trips() -> None:
    seen = RecentIds.load(None)
    assert seen.add("a", T0, timedelta(days=7))
    assert not seen.add("a", T0 + timedelta(hours=1), timedelta(days=7))
    again = RecentIds.load(seen.dump())
    assert not again.add("a", T0, timedelta(days=7))


def test_ids_older_than_the_horizon_are_forgotten() -> None:
    seen = RecentIds.load(None)
    seen.add("old", T0, timedelta(days=1))
    for n in range(70):
        seen.add(f"new{n}", T0 + timedelta(days=3, minutes=n), timedelta(days=1))
    assert "old" not in seen.ids
    assert len(seen.ids) == 70
