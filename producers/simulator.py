"""A seeded simulator of a realistic population, with its ground truth.

Each simulated person arrives through one marketing channel, sees one or more impressions,
and may click, leave a lead, order, pay and buy again. Conversion probabilities differ per
channel and the delays between stages are drawn from log-normal distributions (minutes to
weeks), so the funnel has the shape of real traffic. Some people get a later touch through
another channel (retargeting, e-mail) before they order.

The simulator is deterministic for a seed and knows the truth: for every person, the events it
generated and the level each configured funnel reaches over them, computed by a brute-force
reading of the ``windowFunnel`` definition (independent of the streaming core).
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from funnel.clock import to_millis
from funnel.events import Context, Event, EventType, LeadInfo
from funnel.funnels import FunnelCatalog, FunnelSpec

__all__ = ["CHANNEL_PROFILES", "ChannelProfile", "GroundTruth", "Simulation", "simulate"]

DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """How people who arrive through one channel behave."""

    name: str
    weight: float
    p_click: float
    p_lead: float
    p_order: float
    p_pay: float
    p_repeat: float
    order_value: float
    context: dict[str, str]


# Probabilities are per stage, given the previous one. Paid search converts best; display and
# paid social bring volume that rarely buys.
CHANNEL_PROFILES: tuple[ChannelProfile, ...] = (
    ChannelProfile(
        "Paid Search",
        0.22,
        0.30,
        0.22,
        0.45,
        0.85,
        0.30,
        180.0,
        {
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "brand_search",
            "gclid": "Cj0KCQ",
        },
    ),
    ChannelProfile(
        "Paid Social",
        0.20,
        0.16,
        0.12,
        0.30,
        0.80,
        0.20,
        90.0,
        {
            "utm_source": "facebook",
            "utm_medium": "paid_social",
            "utm_campaign": "autumn_promo",
            "fbclid": "IwAR0",
        },
    ),
    ChannelProfile(
        "Organic Search",
        0.18,
        0.35,
        0.15,
        0.40,
        0.88,
        0.25,
        150.0,
        {"referrer": "https://www.google.com/"},
    ),
    ChannelProfile(
        "Email",
        0.10,
        0.25,
        0.30,
        0.50,
        0.90,
        0.45,
        140.0,
        {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "weekly_digest"},
    ),
    ChannelProfile(
        "Display",
        0.15,
        0.05,
        0.10,
        0.25,
        0.75,
        0.15,
        110.0,
        {"utm_source": "gdn", "utm_medium": "display", "utm_campaign": "retargeting"},
    ),
    ChannelProfile(
        "Referral",
        0.07,
        0.40,
        0.18,
        0.40,
        0.85,
        0.25,
        160.0,
        {"referrer": "https://blog.partner-example.org/review"},
    ),
    ChannelProfile("Direct", 0.08, 0.45, 0.20, 0.50, 0.90, 0.35, 170.0, {}),
)

_SECOND_TOUCH = ("Email", "Display", "Paid Search")


@dataclass(slots=True)
class PersonTruth:
    """What the simulator knows about one person."""

    person_id: str
    channel: str
    events: list[Event] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class GroundTruth:
    """The truth of one simulation: per person events and funnel levels."""

    funnels: FunnelCatalog
    persons: dict[str, PersonTruth] = field(default_factory=dict)

    def step_counts(self, funnel: str) -> list[int]:
        """Number of persons who reached each step (level >= k) of ``funnel``."""
        spec = self.funnels.get(funnel)
        return [
            sum(1 for p in self.persons.values() if p.levels.get(funnel, 0) >= k)
            for k in range(1, len(spec.steps) + 1)
        ]

    def write(self, path: Path) -> None:
        """Write one JSON line per person: id, channel, levels and the event ids with times."""
        with path.open("w", encoding="utf-8") as out:
            for p in self.persons.values():
                record = {
                    "person_id": p.person_id,
                    "channel": p.channel,
                    "levels": p.levels,
                    "events": [
                        {
                            "event_id": e.event_id,
                            "type": e.type.value,
                            "occurred_at": e.occurred_at.isoformat(),
                        }
                        for e in p.events
                    ],
                }
                out.write(json.dumps(record) + "\n")


@dataclass(slots=True)
class Simulation:
    """The events of a run, in the order they would arrive, and their ground truth."""

    events: list[Event]
    truth: GroundTruth


def reference_level(events: list[Event], spec: FunnelSpec) -> int:
    """The ``windowFunnel`` level by its definition, brute force (an oracle, not the core).

    For every step-1 event as the start of a chain, take greedily the earliest event of each
    next step that comes later in the person's order and within the window of the start;
    the level is the longest chain over all starts.
    """
    ordered = sorted(events, key=lambda e: e.order_key)
    matches = [(to_millis(e.occurred_at), spec.matching_steps(e)) for e in ordered]
    best = 0
    for i, (start, steps) in enumerate(matches):
        if 0 not in steps:
            continue
        level, position = 1, i
        for j in range(i, len(matches)):
            at, later = matches[j]
            if at > start + spec.window_ms:
                break
            if level < len(spec.steps) and level in later and (j > position or level == 1):
                level, position = level + 1, j
        best = max(best, level)
    return best


class _Person:
    """Builds one person's events on one device, with increasing time and ``seq``."""

    def __init__(self, rng: random.Random, site_id: str, person_no: int, start: datetime) -> None:
        self.rng = rng
        self.site_id = site_id
        self.anonymous_id = f"anon-{person_no:07d}-{rng.getrandbits(32):08x}"
        self.customer_id: str | None = None
        self.at = start
        self.seq = 0
        self.events: list[Event] = []

    def wait(self, median_seconds: float, sigma: float = 1.0) -> None:
        seconds = median_seconds * math.exp(self.rng.gauss(0.0, sigma))
        self.at += timedelta(seconds=max(1.0, seconds), milliseconds=self.rng.randrange(1000))

    def emit(
        self, kind: EventType, context: dict[str, str] | None = None, **fields: object
    ) -> None:
        self.events.append(
            Event.model_validate(
                {
                    "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                    "type": kind,
                    "site_id": self.site_id,
                    "anonymous_id": self.anonymous_id,
                    "customer_id": self.customer_id,
                    "occurred_at": self.at,
                    "received_at": self.at + timedelta(milliseconds=self.rng.randrange(50, 900)),
                    "seq": self.seq,
                    "context": Context.model_validate(context or {}),
                    **fields,
                }
            )
        )
        self.seq += 1


def _touch_context(profile: ChannelProfile, page: str) -> dict[str, str]:
    ctx = {k: v for k, v in profile.context.items() if k != "referrer"}
    query = "&".join(f"{k}={v}" for k, v in ctx.items())
    return {
        **ctx,
        "url": f"https://shop.example.com/{page}" + (f"?{query}" if query else ""),
        **({"referrer": profile.context["referrer"]} if "referrer" in profile.context else {}),
    }


def simulate(
    persons: int = 20_000,
    *,
    seed: int = 7,
    site_id: str = "demo",
    start: datetime = DEFAULT_START,
    days: int = 30,
    funnels: FunnelCatalog | None = None,
) -> Simulation:
    """Simulate ``persons`` people arriving over ``days`` from ``start``.

    Events come back in arrival order (by time across people; each person's own events in
    their order), with the ground truth for every configured funnel.
    """
    rng = random.Random(seed)
    catalog = funnels or FunnelCatalog.default()
    truth = GroundTruth(funnels=catalog)
    profiles = {p.name: p for p in CHANNEL_PROFILES}
    weights = [p.weight for p in CHANNEL_PROFILES]
    for n in range(persons):
        profile = rng.choices(CHANNEL_PROFILES, weights)[0]
        arrival = start + timedelta(seconds=rng.uniform(0, days * DAY))
        person = _Person(rng, site_id, n, arrival)
        _journey(person, profile, profiles, rng)
        record = PersonTruth(person.anonymous_id, profile.name, person.events)
        record.levels = {spec.name: reference_level(person.events, spec) for spec in catalog.funnel}
        truth.persons[person.anonymous_id] = record
    events = sorted(
        (e for p in truth.persons.values() for e in p.events),
        key=lambda e: (e.occurred_at, e.anonymous_id or "", e.seq or 0),
    )
    return Simulation(events=events, truth=truth)


def _journey(
    person: _Person,
    profile: ChannelProfile,
    profiles: dict[str, ChannelProfile],
    rng: random.Random,
) -> None:
    for _ in range(1 + min(int(rng.expovariate(0.8)), 5)):
        person.emit(EventType.IMPRESSION, _touch_context(profile, "landing"))
        person.wait(6 * HOUR, 1.5)
    if rng.random() >= profile.p_click:
        return
    person.emit(EventType.CLICK, _touch_context(profile, "offer"))
    person.wait(2 * DAY, 1.2)
    if rng.random() >= profile.p_lead:
        return
    person.customer_id = f"cust-{rng.getrandbits(48):012x}"
    intent = rng.choices(("info", "consultation", "purchase"), (0.5, 0.3, 0.2))[0]
    person.emit(EventType.LEAD, lead=LeadInfo(form="signup", intent=intent))
    person.wait(3 * DAY, 1.0)
    if rng.random() < 0.3:
        other = profiles[rng.choice([c for c in _SECOND_TOUCH if c != profile.name])]
        person.emit(EventType.IMPRESSION, _touch_context(other, "reminder"))
        person.wait(4 * HOUR, 1.0)
        person.emit(EventType.CLICK, _touch_context(other, "cart"))
        person.wait(HOUR, 1.0)
    if rng.random() >= profile.p_order:
        return
    value = Decimal(str(round(profile.order_value * math.exp(rng.gauss(0, 0.5)), 2)))
    order_id = f"ord-{rng.getrandbits(40):010x}"
    person.emit(EventType.ORDER, order_id=order_id, revenue=value, currency="USD")
    person.wait(6 * HOUR, 1.5)
    if rng.random() >= profile.p_pay:
        return
    person.emit(EventType.PAYMENT, order_id=order_id, revenue=value, currency="USD")
    while rng.random() < profile.p_repeat:
        person.wait(12 * DAY, 0.8)
        repeat_value = Decimal(str(round(profile.order_value * math.exp(rng.gauss(0, 0.5)), 2)))
        person.emit(
            EventType.REPEAT,
            order_id=f"ord-{rng.getrandbits(40):010x}",
            revenue=repeat_value,
            currency="USD",
        )
