"""Funnel progression, one event at a time, in the three modes of DESIGN §6.

The state per person and funnel is what ClickHouse ``windowFunnel`` keeps while it scans a
person's events in time order: for every step, the chain that reached it last as
``(chain start, time the step was reached)`` in epoch milliseconds.

* **ordered** — ``windowFunnel(window)``: a step-1 event starts a new chain; a step-k event
  extends the chain that reached step k-1 if it falls within the window of that chain's
  start. The level is the deepest step any chain reached.
* **strict** — ``windowFunnel(window, 'strict_order')``: as ordered, but once a chain has
  started, an event that is not the next step of a chain (a step whose previous step was
  never reached, or an event that matches no step) ends the scan: the level is frozen.
* **any** — a step counts if the person reached it at all within the window that opens with
  their first event of any step; ``level`` is the number of steps reached.

Feeding a person's events in their total order (time, ``seq``, ``event_id``) gives exactly
the level ``windowFunnel`` returns over the same events for ordered and strict (property tests
check both against chDB).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = ["CONVERTED", "DROPPED", "IN_WINDOW", "FunnelProgress", "advance", "deadline", "status"]

IN_WINDOW = "in_window"
CONVERTED = "converted"
DROPPED = "dropped"


class FunnelProgress(msgspec.Struct, array_like=True, gc=False):
    """Per-person, per-funnel state. ``chain[k]`` is ``(start_ms, reached_ms)`` or ``None``."""

    chain: list[tuple[int, int] | None] = msgspec.field(default_factory=list)
    level: int = 0
    started: bool = False
    stopped: bool = False

    @classmethod
    def empty(cls, steps: int) -> FunnelProgress:
        return cls(chain=[None] * steps)

    def clone(self) -> FunnelProgress:
        return FunnelProgress(list(self.chain), self.level, self.started, self.stopped)


def advance(
    progress: FunnelProgress,
    at_ms: int,
    steps: Sequence[int],
    window_ms: int,
    mode: str = "ordered",
) -> list[int]:
    """Apply one event that counts as the 0-based ``steps`` (ascending; empty when it matches
    no step) at ``at_ms``.

    Mutates ``progress`` and returns the 0-based steps reached for the first time (each step
    is reported once per person and funnel).
    """
    if mode == "any":
        return _advance_any(progress, at_ms, steps, window_ms)
    if progress.stopped:
        return []
    chain = progress.chain
    strict = mode == "strict"
    if strict and not steps and progress.started:
        progress.stopped = True
        return []
    top = 0  # the deepest step this event set (1-based; only those can raise the level)
    for k in steps:
        if k == 0:
            chain[0] = (at_ms, at_ms)
            progress.started = True
            top = top or 1
            continue
        previous = chain[k - 1]
        if strict and progress.started and previous is None:
            progress.stopped = True
            break
        if previous is not None and at_ms <= previous[0] + window_ms:
            chain[k] = (previous[0], at_ms)
            top = k + 1
    before = progress.level
    if top <= before:
        return []
    progress.level = top
    return list(range(before, top))


def _advance_any(
    progress: FunnelProgress, at_ms: int, steps: Sequence[int], window_ms: int
) -> list[int]:
    if not steps:
        return []
    chain = progress.chain
    if not progress.started:
        progress.started = True
        start = at_ms
    else:
        start = next(c[0] for c in chain if c is not None)
    if at_ms > start + window_ms:
        return []
    new = [k for k in steps if chain[k] is None]
    for k in new:
        chain[k] = (start, at_ms)
    progress.level += len(new)
    return new


def deadline(progress: FunnelProgress, steps: int, window_ms: int) -> int | None:
    """The last instant (epoch ms) at which the person can still reach a further step.

    Any chain can still grow while its start is within the window, and the newest chain
    started last (ordered and strict: the latest step-1 event; any: the one window). ``None``
    when nothing can change any more: converted, or a strict scan that stopped.
    """
    if progress.level >= steps or progress.stopped or not progress.started:
        return None
    # The newest chain start: ordered and strict re-start step 1 at every step-1 event (and a
    # later step's chain began at an earlier step 1); any has one start for every step.
    for reached in progress.chain:
        if reached is not None:
            return reached[0] + window_ms
    return None


def status(progress: FunnelProgress, steps: int, window_ms: int, now_ms: int) -> str:
    """``converted`` (the last step), ``in_window`` (can still advance at ``now_ms``) or
    ``dropped`` (its window expired, or a strict scan stopped, before the next step)."""
    if progress.level >= steps:
        return CONVERTED
    due = deadline(progress, steps, window_ms)
    return IN_WINDOW if due is not None and now_ms <= due else DROPPED
