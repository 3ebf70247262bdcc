"""The live event rate: one-second buckets over a window, on an injected clock."""

from __future__ import annotations

import pytest

from storage.reports.api import EventRate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_over_the_last_minute_and_the_series() -> None:
    clock = FakeClock()
    rate = EventRate(window_s=60, clock=clock)
    clock.now += 5
    rate.add(50)  # 50 events 5 s after start: 10/s so far
    snap = rate.snapshot(rate_over_s=60, step_s=10)
    assert snap["total"] == 50
    assert snap["per_second"] == pytest.approx(10.0)
    assert snap["series"] == [0.0] * 5 + [5.0]
    clock.now += 120  # two minutes later: the minute's rate is 0, the total stays
    rate.add(6)
    snap = rate.snapshot(rate_over_s=60, step_s=10)
    assert snap["total"] == 56
    assert snap["per_second"] == pytest.approx(6 / 60)
    assert snap["series"] == [0.0] * 5 + [0.6]


def test_old_buckets_are_dropped() -> None:
    clock = FakeClock()
    rate = EventRate(window_s=10, clock=clock)
    for _ in range(100):
        rate.add(1)
        clock.now += 1
    assert len(rate._buckets) <= 10
