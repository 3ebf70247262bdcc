"""The messiness of real traffic, on demand: what the collector actually receives.

:func:`arrivals` turns a simulation's clean events into wire payloads (JSON-ready dicts) in
arrival order, with any of:

* **duplicates** — a client retry re-sends an event with the same ``event_id``;
* **reordering** — events of one device arrive shuffled within a few seconds;
* **clock skew** — some devices' clocks are off by minutes to hours; their ``occurred_at`` and
  ``sent_at`` are both wrong by the same amount (the collector corrects it from ``sent_at``);
* **late events** — a device that was offline sends hours later;
* **bots** — crawlers with a bot user agent that see pages and never convert;
* **malformed** — payloads that break the contract (a missing field, a bad type, junk).

Every choice is drawn from a seeded RNG, so a seed gives the same arrivals every time. The
``Arrival.kind`` of each payload says what it is, so tests can compare exactly.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from funnel.enrichment import parse_user_agent
from funnel.events import Event

__all__ = ["Arrival", "Mess", "arrivals", "bot_events"]

BOT_USER_AGENT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HUMAN_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)


@dataclass(frozen=True, slots=True)
class Mess:
    """Rates of each kind of mess (fractions of events, or of devices for skew)."""

    duplicates: float = 0.0
    reorder_seconds: float = 0.0
    skewed_devices: float = 0.0
    max_skew: timedelta = timedelta(hours=3)
    late: float = 0.0
    late_by: timedelta = timedelta(hours=6)
    malformed: float = 0.0

    @classmethod
    def realistic(cls) -> Mess:
        """A plausible mix: 2% retries, seconds of reordering, 5% skewed clocks, 1% late,
        0.5% malformed."""
        return cls(
            duplicates=0.02, reorder_seconds=5.0, skewed_devices=0.05, late=0.01, malformed=0.005
        )


@dataclass(frozen=True, slots=True)
class Arrival:
    """One payload as the collector receives it, at ``arrives_at`` (the collector's clock)."""

    arrives_at: datetime
    payload: dict[str, Any]
    kind: str  # "event", "duplicate" or "malformed"
    user_agent: str = HUMAN_USER_AGENT
    skew: timedelta = timedelta(0)
    """How far the sending device's clock is off (``sent_at`` is that clock at sending)."""


def bot_events(
    rng: random.Random, site_id: str, count: int, start: datetime, days: int
) -> list[Event]:
    """Crawler page views: impressions only, from a few bot devices, flagged as the collector
    flags them from their user agent (in process no collector sees them)."""
    agent = parse_user_agent(BOT_USER_AGENT)
    server = {"is_bot": agent.is_bot, "browser": agent.browser or None, "device": agent.device}
    events = []
    for n in range(count):
        at = start + timedelta(seconds=rng.uniform(0, days * 86_400))
        events.append(
            Event.model_validate(
                {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "type": "impression",
                    "site_id": site_id,
                    "anonymous_id": f"bot-{n % 5}",
                    "occurred_at": at,
                    "received_at": at,
                    "context": {
                        "url": "https://shop.example.com/",
                        "user_agent": BOT_USER_AGENT,
                        **server,
                    },
                }
            )
        )
    return events


def arrivals(events: list[Event], mess: Mess, *, seed: int = 0) -> list[Arrival]:
    """The wire payloads of ``events`` in arrival order, with ``mess`` applied."""
    rng = random.Random(seed)
    skew: dict[str, timedelta] = {}
    out: list[Arrival] = []
    for event in events:
        device = event.anonymous_id or event.customer_id or ""
        if device not in skew:
            skewed = rng.random() < mess.skewed_devices
            seconds = rng.uniform(-1, 1) * mess.max_skew.total_seconds() if skewed else 0.0
            skew[device] = timedelta(seconds=round(seconds))
        arrives = event.occurred_at + timedelta(milliseconds=rng.randrange(20, 400))
        if mess.reorder_seconds:
            arrives += timedelta(seconds=rng.uniform(0, mess.reorder_seconds))
        if rng.random() < mess.late:
            arrives += mess.late_by * rng.uniform(0.5, 1.0)
        payload = event.model_dump(mode="json", exclude_none=True)
        payload.pop("received_at", None)
        offset = skew[device]
        payload["occurred_at"] = _iso(event.occurred_at + offset)
        payload["sent_at"] = _iso(arrives - timedelta(milliseconds=10) + offset)
        agent = event.context.user_agent or HUMAN_USER_AGENT
        payload.get("context", {}).pop("user_agent", None)
        out.append(Arrival(arrives, payload, "event", agent, offset))
        if rng.random() < mess.duplicates:
            retry_at = arrives + timedelta(seconds=rng.uniform(1, 30))
            retry = {**payload, "sent_at": _iso(retry_at - timedelta(milliseconds=10) + offset)}
            out.append(Arrival(retry_at, retry, "duplicate", agent, offset))
        if rng.random() < mess.malformed:
            out.append(Arrival(arrives, _break(rng, payload), "malformed", agent, offset))
    out.sort(key=lambda a: a.arrives_at)
    return out


def _break(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    broken = dict(payload)
    broken["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    how = rng.randrange(4)
    if how == 0:
        broken.pop("occurred_at")
    elif how == 1:
        broken["type"] = "purchase"
    elif how == 2:
        broken["seq"] = -1
    else:
        broken["occurred_at"] = "yesterday"
    return broken


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")
