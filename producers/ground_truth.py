"""The ground truth of a simulation: who each simulated person is, what they did, the level
each reached in every funnel by a reference implementation of its semantics, and the ad spend
the simulation implies — what the tests compare the pipeline's answers with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from funnel.clock import to_millis
from funnel.events import Event
from funnel.funnels import FunnelCatalog, FunnelMode, FunnelSpec
from funnel.progression import FunnelProgress, advance

__all__ = ["GroundTruth", "PersonTruth", "Simulation", "SpendRow", "reference_level"]


@dataclass(slots=True)
class PersonTruth:
    """What the simulator knows about one person (``person_id`` = their first device)."""

    person_id: str
    channel: str
    events: list[Event] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    customer_id: str | None = None
    is_bot: bool = False
    touch_channels: dict[str, str] = field(default_factory=dict)
    """The channel the simulator sent each touch (impression/click) through, by event_id."""


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Ad spend of one channel and campaign on one day (the ``spend`` table's shape)."""

    date: date
    channel: str
    campaign: str
    cost: Decimal
    currency: str = "USD"


@dataclass(slots=True)
class GroundTruth:
    """The truth of one simulation: per person events and funnel levels."""

    funnels: FunnelCatalog
    persons: dict[str, PersonTruth] = field(default_factory=dict)

    def step_counts(self, funnel: str) -> list[int]:
        """Number of persons who reached each step (level >= k) of ``funnel``; bots are not
        persons here, as in the reports (their events are stored and flagged, never counted)."""
        spec = self.funnels.get(funnel)
        return [
            sum(1 for p in self.persons.values() if not p.is_bot and p.levels.get(funnel, 0) >= k)
            for k in range(1, len(spec.steps) + 1)
        ]

    def write(self, path: Path) -> None:
        """Write one JSON line per person.

        Each line has the person's id, devices, customer id, arrival channel, bot flag, the
        level reached in every funnel with the time each reached step's first event happened,
        the conversions (type, time, order, revenue) and every touch with its channel.
        """
        conversions = {"lead", "order", "payment", "repeat"}
        with path.open("w", encoding="utf-8") as out:
            for p in self.persons.values():
                stages = {}
                for spec in self.funnels.specs:
                    reached = {}
                    for step in spec.steps[: p.levels.get(spec.name, 0)]:
                        first = next(e for e in p.events if step.matches(e))
                        reached[step.name] = first.occurred_at.isoformat()
                    stages[spec.name] = reached
                record = {
                    "person_id": p.person_id,
                    "devices": p.devices,
                    "customer_id": p.customer_id,
                    "channel": p.channel,
                    "is_bot": p.is_bot,
                    "levels": p.levels,
                    "stages": stages,
                    "conversions": [
                        {
                            "event_id": e.event_id,
                            "type": e.type.value,
                            "at": e.occurred_at.isoformat(),
                            "order_id": e.order_id,
                            "revenue": str(e.revenue) if e.revenue is not None else None,
                        }
                        for e in p.events
                        if e.type.value in conversions
                    ],
                    "touches": [
                        {
                            "event_id": e.event_id,
                            "type": e.type.value,
                            "at": e.occurred_at.isoformat(),
                            "channel": p.touch_channels.get(e.event_id, p.channel),
                        }
                        for e in p.events
                        if e.type.value in ("impression", "click")
                    ],
                }
                out.write(json.dumps(record) + "\n")


@dataclass(slots=True)
class Simulation:
    """The events of a run in the order they happened, their ground truth, and ad spend."""

    events: list[Event]
    truth: GroundTruth
    spend: list[SpendRow] = field(default_factory=list)

    def write_spend(self, path: Path) -> None:
        """Spend as CSV (``date,channel,campaign,cost,currency``), for ``funnel spend load``."""
        with path.open("w", encoding="utf-8") as out:
            out.write("date,channel,campaign,cost,currency\n")
            for row in self.spend:
                out.write(f"{row.date},{row.channel},{row.campaign},{row.cost},{row.currency}\n")


def reference_level(events: list[Event], spec: FunnelSpec) -> int:
    """The level of ``spec`` over a person's events, by definition (an oracle for the core).

    * ordered — brute force over ``windowFunnel``'s definition: for every step-1 event as the
      start of a chain, take greedily the earliest event of each next step that comes no
      earlier in the person's order and within the window of the start; the level is the
      longest chain over all starts;
    * any — the steps reached within the window that opens with the first step event;
    * strict — ``windowFunnel``'s scan with ``strict_order`` (the scan is the definition
      here, so this one is not independent of the core; ClickHouse is its oracle in tests).
    """
    ordered = sorted(events, key=lambda e: e.order_key)
    matches = [(to_millis(e.occurred_at), spec.matching_steps(e)) for e in ordered]
    if spec.mode is FunnelMode.ANY:
        firsts = [at for at, steps in matches if steps]
        if not firsts:
            return 0
        end = firsts[0] + spec.window_ms
        return len({k for at, steps in matches if at <= end for k in steps})
    if spec.mode is FunnelMode.STRICT:
        progress = FunnelProgress.empty(len(spec.steps))
        for at, steps in matches:
            advance(progress, at, steps, spec.window_ms, "strict")
        return progress.level
    best = 0
    for i, (start, steps) in enumerate(matches):
        if 0 not in steps:
            continue
        level = 1
        for at, later in matches[i:]:
            if at > start + spec.window_ms:
                break
            while level < len(spec.steps) and level in later:
                level += 1
        best = max(best, level)
    return best
