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

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from funnel.channels import DIRECT
from funnel.events import Context, Event, EventType, LeadInfo
from funnel.funnels import FunnelCatalog
from producers.ground_truth import (
    GroundTruth,
    PersonTruth,
    Simulation,
    SpendRow,
    reference_level,
)
from producers.messiness import bot_events

__all__ = [
    "CHANNEL_PROFILES",
    "ChannelProfile",
    "GroundTruth",
    "PersonTruth",
    "Simulation",
    "SpendRow",
    "simulate",
]

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


class _Person:
    """Builds one person's events on one device, with increasing time and ``seq``."""

    def __init__(self, rng: random.Random, site_id: str, person_no: int, start: datetime) -> None:
        self.rng = rng
        self.site_id = site_id
        self.person_no = person_no
        self.anonymous_id = f"anon-{person_no:07d}-{rng.getrandbits(32):08x}"
        self.devices = [self.anonymous_id]
        self.customer_id: str | None = None
        self.at = start
        self.seq = 0
        self.events: list[Event] = []
        self.touch_channels: dict[str, str] = {}
        self.next_device: str | None = None

    def switch_device(self) -> None:
        """Go on from another device (a phone after a laptop) from the next event on."""
        self.next_device = f"anon-{self.person_no:07d}-{self.rng.getrandbits(32):08x}"

    def touch(self, kind: EventType, profile: ChannelProfile, page: str) -> None:
        self.emit(kind, _touch_context(profile, page))
        self.touch_channels[self.events[-1].event_id] = profile.name

    def wait(self, median_seconds: float, sigma: float = 1.0) -> None:
        seconds = median_seconds * math.exp(self.rng.gauss(0.0, sigma))
        self.at += timedelta(seconds=max(1.0, seconds), milliseconds=self.rng.randrange(1000))

    def emit(
        self, kind: EventType, context: dict[str, str] | None = None, **fields: object
    ) -> None:
        if self.next_device is not None:  # a new device has its own id and its own seq
            self.anonymous_id, self.next_device = self.next_device, None
            self.devices.append(self.anonymous_id)
            self.seq = 0
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
    multi_device: float = 0.0,
    bots: int = 0,
) -> Simulation:
    """Simulate ``persons`` people arriving over ``days`` from ``start``.

    ``multi_device`` is the share of people who, once known, go on from a second device
    (telling them apart needs identity stitching). ``bots`` adds crawler page views from a
    few bot devices (flagged by the collector, counted as people at the first step).
    Events come back in the order they happened (each person's own events in their order),
    with the ground truth for every configured funnel and the ad spend per channel and day.
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
        _journey(person, profile, profiles, rng, multi_device)
        record = PersonTruth(
            person.devices[0],
            profile.name,
            person.events,
            devices=person.devices,
            customer_id=person.customer_id,
            touch_channels=person.touch_channels,
        )
        record.levels = {spec.name: reference_level(person.events, spec) for spec in catalog.specs}
        truth.persons[record.person_id] = record
    if bots:
        crawl = bot_events(random.Random(seed + 1), site_id, bots, start, days)
        for event in crawl:
            device = event.anonymous_id or ""
            if device not in truth.persons:
                truth.persons[device] = PersonTruth(device, DIRECT, devices=[device], is_bot=True)
            truth.persons[device].events.append(event)
        for record in truth.persons.values():
            if record.is_bot:
                record.levels = {s.name: reference_level(record.events, s) for s in catalog.specs}
    events = sorted(
        (e for p in truth.persons.values() for e in p.events),
        key=lambda e: (e.occurred_at, e.anonymous_id or "", e.seq or 0),
    )
    return Simulation(events=events, truth=truth, spend=_spend(truth))


# Cost per click and per thousand impressions of the paid channels.
_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "Paid Search": (Decimal("1.20"), Decimal("0")),
    "Paid Social": (Decimal("0.45"), Decimal("6.00")),
    "Display": (Decimal("0.10"), Decimal("2.50")),
    "Email": (Decimal("0.02"), Decimal("0.40")),
}


def _spend(truth: GroundTruth) -> list[SpendRow]:
    """Spend per day, channel and campaign, priced from the simulated touches."""
    totals: dict[tuple[date, str, str], Decimal] = {}
    for person in truth.persons.values():
        for event in person.events:
            channel = person.touch_channels.get(event.event_id)
            if channel not in _PRICES or channel is None:
                continue
            cpc, cpm = _PRICES[channel]
            price = cpc if event.type is EventType.CLICK else cpm / 1000
            key = (event.occurred_at.date(), channel, event.context.utm_campaign or "")
            totals[key] = totals.get(key, Decimal(0)) + price
    return [
        SpendRow(day, channel, campaign, cost.quantize(Decimal("0.01")))
        for (day, channel, campaign), cost in sorted(totals.items())
    ]


def _journey(
    person: _Person,
    profile: ChannelProfile,
    profiles: dict[str, ChannelProfile],
    rng: random.Random,
    multi_device: float = 0.0,
) -> None:
    for _ in range(1 + min(int(rng.expovariate(0.8)), 5)):
        person.touch(EventType.IMPRESSION, profile, "landing")
        person.wait(6 * HOUR, 1.5)
    if rng.random() >= profile.p_click:
        return
    person.touch(EventType.CLICK, profile, "offer")
    person.wait(2 * DAY, 1.2)
    if rng.random() >= profile.p_lead:
        return
    person.customer_id = f"cust-{rng.getrandbits(48):012x}"
    intent = rng.choices(("info", "consultation", "purchase"), (0.5, 0.3, 0.2))[0]
    person.emit(EventType.LEAD, lead=LeadInfo(form="signup", intent=intent))
    person.wait(3 * DAY, 1.0)
    if multi_device and rng.random() < multi_device:
        person.switch_device()
    if rng.random() < 0.3:
        other = profiles[rng.choice([c for c in _SECOND_TOUCH if c != profile.name])]
        person.touch(EventType.IMPRESSION, other, "reminder")
        person.wait(4 * HOUR, 1.0)
        person.touch(EventType.CLICK, other, "cart")
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
