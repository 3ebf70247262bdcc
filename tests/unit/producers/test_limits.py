"""Token buckets (issue 19): a burst, then the rate; the wait until a token is back; a
bounded table of buckets."""

from __future__ import annotations

import pytest

from producers.collector.limits import Limit, RateLimits, Throttle, retry_after
from producers.collector.settings import CollectorSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    throttle = Throttle(Limit(rate=2, burst=3), size=10, clock=clock)
    assert [throttle.take("a") for _ in range(3)] == [0, 0, 0]
    assert throttle.take("a") == pytest.approx(0.5)  # one token every half second
    assert throttle.take("b") == 0  # another name, another bucket
    clock.now += 0.5
    assert throttle.take("a") == 0
    assert throttle.take("a") > 0
    clock.now += 10  # refills up to the burst, not beyond
    assert [throttle.take("a") for _ in range(4)][-1] > 0
    assert retry_after(0.01) == "1"
    assert retry_after(4.2) == "5"


def test_looking_does_not_take() -> None:
    clock = Clock()
    throttle = Throttle(Limit(rate=1, burst=1), size=10, clock=clock)
    assert throttle.empty("a") == 0
    assert throttle.take("a") == 0
    assert throttle.empty("a") == pytest.approx(1)
    assert throttle.empty("a") == pytest.approx(1)
    clock.now += 1
    assert throttle.empty("a") == 0


def test_the_table_of_buckets_is_bounded() -> None:
    throttle = Throttle(Limit(rate=1, burst=1), size=100, clock=Clock())
    for n in range(10_000):
        throttle.take(f"address-{n}")
    assert len(throttle) == 100


def test_limits_come_from_the_environment() -> None:
    settings = CollectorSettings.from_env(
        {"FUNNEL_RATE_LIMIT": "10", "FUNNEL_KEY_RATE_LIMIT": "500/600"}
    )
    assert settings.rate_limits is not None
    assert settings.rate_limits.per_address == Limit(rate=10, burst=20)
    assert settings.rate_limits.per_key == Limit(rate=500, burst=600)
    assert settings.rate_limits.failed_keys == RateLimits().failed_keys
    assert CollectorSettings.from_env({"FUNNEL_RATE_LIMIT": "off"}).rate_limits is None
    assert CollectorSettings.from_env({"FUNNEL_TRUST_FORWARDED_FOR": "1"}).trust_forwarded_for
    assert not CollectorSettings.from_env({}).trust_forwarded_for
    with pytest.raises(ValueError, match="RATE/BURST"):
        CollectorSettings.from_env({"FUNNEL_RATE_LIMIT": "fast"})
