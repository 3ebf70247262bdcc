"""Ordered-funnel progression: ClickHouse ``windowFunnel`` default mode, one event at a time.

The state per person and funnel is what ``windowFunnel`` keeps while it scans a person's
events in time order: for every step, the chain that reached it last as
``(chain start, time the step was reached)`` in epoch milliseconds. A step-1 event starts a
new chain; a step-k event extends the chain that reached step k-1 if it falls within the
window of that chain's start. The level is the deepest step any chain reached.

Feeding a person's events in their total order (time, ``seq``, ``event_id``) gives exactly the
level ``windowFunnel(window_ms)(toUInt64(toUnixTimestamp64Milli(ts)), step1, ..., stepN)``
returns over the same events (a property test checks this against chDB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FunnelProgress", "advance"]


@dataclass(slots=True)
class FunnelProgress:
    """Per-person, per-funnel state. ``chain[k]`` is ``(start_ms, reached_ms)`` or ``None``."""

    chain: list[tuple[int, int] | None] = field(default_factory=list)
    level: int = 0

    @classmethod
    def empty(cls, steps: int) -> FunnelProgress:
        return cls(chain=[None] * steps, level=0)


def advance(progress: FunnelProgress, at_ms: int, steps: list[int], window_ms: int) -> list[int]:
    """Apply one event that counts as the 0-based ``steps`` (ascending) at ``at_ms``.

    Mutates ``progress`` and returns the 0-based steps whose level was reached for the first
    time (the level only grows, so each step is reported once per person and funnel).
    """
    chain = progress.chain
    for k in steps:
        if k == 0:
            chain[0] = (at_ms, at_ms)
            continue
        previous = chain[k - 1]
        if previous is not None and at_ms <= previous[0] + window_ms:
            chain[k] = (previous[0], at_ms)
    before = progress.level
    level = before
    for k in range(len(chain) - 1, before - 1, -1):
        if chain[k] is not None:
            level = k + 1
            break
    progress.level = level
    return list(range(before, level))
