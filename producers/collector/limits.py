"""Rate limits: token buckets per client address, per write key, and for failed keys.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a request
takes one. An empty bucket is a 429 with ``Retry-After``: the seconds until a token is back.
The buckets of one limit live in a bounded table (the least recently used goes first), so an
attacker cycling through addresses or keys costs memory only up to that bound, and a
forgotten bucket comes back full (the bound is far above the clients a collector sees in a
bucket's refill time).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Limit", "RateLimits", "Throttle"]


class Limit(BaseModel):
    """``rate`` requests per second, ``burst`` at once (``RATE[/BURST]`` in the environment:
    the burst is twice the rate unless given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float = Field(gt=0)
    burst: float = Field(ge=1)

    @classmethod
    def parse(cls, text: str) -> Limit:
        rate, _, burst = text.partition("/")
        try:
            value = float(rate)
            return cls(rate=value, burst=float(burst) if burst else max(1.0, 2 * value))
        except ValueError as exc:
            raise ValueError(
                f"a rate limit looks like RATE or RATE/BURST (requests per second), not {text!r}"
            ) from exc


class RateLimits(BaseModel):
    """The collector's limits (defaults documented in the README)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_address: Limit = Limit(rate=50, burst=200)
    """Each client address (``FUNNEL_RATE_LIMIT``): a browser sends a few requests a
    minute, a server behind one address more, a flood far more."""
    per_key: Limit = Limit(rate=2000, burst=4000)
    """Each write or read key (``FUNNEL_KEY_RATE_LIMIT``): a whole site's traffic."""
    failed_keys: Limit = Limit(rate=0.2, burst=10)
    """Requests with a wrong key, per client address (``FUNNEL_AUTH_FAIL_LIMIT``): guessing
    keys gets ten tries, then one every five seconds."""
    table_size: int = Field(default=100_000, ge=1)
    """Buckets kept per limit."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Throttle:
    """The buckets of one :class:`Limit`, by name (an address, a key's digest)."""

    def __init__(
        self, limit: Limit, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.size, self.clock = limit, size, clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, name: str) -> float:
        """Take a token for ``name``: ``0`` when there was one, else the seconds to wait."""
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(self.limit.burst, now)
            if len(self._buckets) > self.size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(name)
            refill = (now - bucket.at) * self.limit.rate
            bucket.tokens = min(self.limit.burst, bucket.tokens + refill)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.limit.rate

    def empty(self, name: str) -> float:
        """The seconds until ``name`` has a token again, without taking one (0: it has)."""
        bucket = self._buckets.get(name)
        if bucket is None:
            return 0.0
        tokens = min(self.limit.burst, bucket.tokens + (self.clock() - bucket.at) * self.limit.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.limit.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait_s: float) -> str:
    """``Retry-After``: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
