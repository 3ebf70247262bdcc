"""Lead temperature (DESIGN §8): cold, warm or hot, by configurable rules, with routing.

:class:`LeadRules` decides a temperature from a :class:`LeadSignals` snapshot (open orders and
when they were placed, the latest intent and when it was expressed, recent clicks). A rule holds
while its reason is fresh: each condition has a time (the newest open order, the intent, the
last click that completed ``min_clicks`` within ``within``) and the rule lapses ``cool_after``
after the oldest of them, so a temperature cools with no event at all. The stream core keeps
the signals per person, emits a change whenever the temperature moves, and keeps the changes
due if nothing else happens (:attr:`LeadSignals.cooling`) for its timer to emit at the moment
they happen. Pure: time is passed in.

Rules are data: :func:`load_lead_rules` reads the file given, else the one ``FUNNEL_LEADS``
names, else the shipped defaults; a file it cannot use raises :class:`LeadRulesError` (a
``ValueError``) whose one-line message names the file and the problem.
"""

from __future__ import annotations

import bisect
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from funnel.events import EventType
from funnel.funnels import parse_duration

__all__ = [
    "LEADS_ENV",
    "MAX_CLICKS",
    "LeadRule",
    "LeadRules",
    "LeadRulesError",
    "LeadSignals",
    "Temperature",
    "load_lead_rules",
]

LEADS_ENV = "FUNNEL_LEADS"
"""The environment variable naming a lead rules file (TOML, the format of the default)."""

_MS = timedelta(milliseconds=1)
MAX_CLICKS = 64
"""Clicks remembered per person (the most recent), so a rule may ask for at most this many."""
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Temperature(StrEnum):
    COLD = "cold"
    WARM = "warm"
    HOT = "hot"


class LeadSignals(msgspec.Struct, array_like=True, gc=False):
    """What the temperature depends on, kept per person by the stream core."""

    is_lead: bool = False
    intent: str = ""
    intent_at_ms: int | None = None
    """When the latest intent was expressed (``None``: no intent yet)."""
    open_orders: list[str] = msgspec.field(default_factory=list)
    order_times_ms: dict[str, int] = msgspec.field(default_factory=dict)
    """When each open order was placed."""
    click_times_ms: list[int] = msgspec.field(default_factory=list)
    """Recent click times, in time order (kept for :attr:`LeadRules.click_memory_ms`)."""
    customer_id: str = ""
    manager_id: str = ""
    """The latest customer and manager the person's events named (a cooling change has no
    event of its own to take them from)."""
    changed_at_ms: int | None = None
    """When the last change the core emitted is dated."""
    cooling: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """The changes due if no other event comes, ``(at_ms, temperature)`` in time order
    (planned by :meth:`LeadRules.evaluate`)."""

    def observe(
        self,
        kind: EventType,
        intent: str,
        customer_id: str,
        manager_id: str,
        at_ms: int,
        click_memory_ms: int,
    ) -> None:
        """Take what an event (of type ``kind``, at ``at_ms``) says about the lead. The core
        has already noted its click (:meth:`click`) and its orders and payments
        (``open_orders``)."""
        if kind is EventType.LEAD or kind is EventType.ORDER:
            self.is_lead = True
        if self.intent and self.intent_at_ms is None:
            self.intent_at_ms = at_ms  # a state kept before intents had times: from now on
        if intent:
            self.intent, self.intent_at_ms = intent, at_ms
        if self.open_orders or self.order_times_ms:
            placed = self.order_times_ms
            self.order_times_ms = {o: placed.get(o, at_ms) for o in self.open_orders}
        self.customer_id = customer_id or self.customer_id
        self.manager_id = manager_id or self.manager_id
        clicks = self.click_times_ms
        if clicks and clicks[0] < at_ms - click_memory_ms:
            self.click_times_ms = [t for t in clicks if t >= at_ms - click_memory_ms]

    def click(self, at_ms: int) -> None:
        """Note a click (the most recent :data:`MAX_CLICKS` are kept)."""
        clicks = self.click_times_ms
        clicks.append(at_ms)
        if len(clicks) > MAX_CLICKS:
            del clicks[0]

    def clone(self) -> LeadSignals:
        """An independent copy."""
        return LeadSignals(
            self.is_lead,
            self.intent,
            self.intent_at_ms,
            list(self.open_orders),
            dict(self.order_times_ms),
            list(self.click_times_ms),
            self.customer_id,
            self.manager_id,
            self.changed_at_ms,
            list(self.cooling),
        )

    def due(self, now_ms: int) -> list[tuple[int, Temperature]]:
        """Take the planned changes due by ``now_ms`` (inclusive), in time order."""
        n = bisect.bisect_right(self.cooling, now_ms, key=lambda change: change[0])
        due, self.cooling = self.cooling[:n], self.cooling[n:]
        return [(at_ms, Temperature(temperature)) for at_ms, temperature in due]

    def next_cooling_ms(self) -> int | None:
        """When the next planned change is due (``None``: none is)."""
        return self.cooling[0][0] if self.cooling else None


class LeadRule(BaseModel):
    """One rule: a temperature and its conditions (all given conditions must hold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: Temperature
    open_order: bool = False
    intents: tuple[str, ...] = ()
    min_clicks: int = Field(default=0, ge=0, le=MAX_CLICKS)
    within: Duration = timedelta(days=7)
    cool_after: Duration | None = None
    """How long the rule's reason stays fresh (``None``: the rules' ``cool_after``)."""

    @model_validator(mode="after")
    def _valid(self) -> LeadRule:
        if not (self.open_order or self.intents or self.min_clicks):
            raise ValueError(f"a {self.temperature} rule needs a condition")
        if self.within <= timedelta(0):
            raise ValueError(f"a {self.temperature} rule needs a positive within")
        if self.cool_after is not None and self.cool_after <= timedelta(0):
            raise ValueError(f"a {self.temperature} rule needs a positive cool_after")
        return self

    def since(self, signals: LeadSignals, at_ms: int) -> int | None:
        """When the rule's reason at ``at_ms`` arose: the oldest of its conditions' latest
        evidence (at or before ``at_ms``), or ``None`` when a condition does not hold."""
        times = []
        if self.open_order:
            placed = [signals.order_times_ms.get(o, at_ms) for o in signals.open_orders]
            placed = [t for t in placed if t <= at_ms]
            if not placed:
                return None
            times.append(max(placed))
        if self.intents:
            said = signals.intent_at_ms
            if signals.intent not in self.intents or said is None or said > at_ms:
                return None
            times.append(said)
        if self.min_clicks:
            burst = self._last_burst(signals.click_times_ms, at_ms)
            if burst is None:
                return None
            times.append(burst)
        return min(times)

    def _last_burst(self, click_times_ms: list[int], at_ms: int) -> int | None:
        """The last click (at or before ``at_ms``) with ``min_clicks`` clicks within
        ``within`` up to it."""
        clicks = sorted(t for t in click_times_ms if t <= at_ms)
        within, k = int(self.within / _MS), self.min_clicks
        for j in range(len(clicks) - 1, k - 2, -1):
            if clicks[j] - clicks[j - k + 1] <= within:
                return clicks[j]
        return None


class LeadRules(BaseModel):
    """Ordered rules (the first one whose reason is fresh wins; none is cold), how long a
    reason stays fresh, and the queue per temperature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: tuple[LeadRule, ...]
    queues: dict[Temperature, str]
    cool_after: Duration = timedelta(days=30)

    @model_validator(mode="after")
    def _valid(self) -> LeadRules:
        if self.cool_after <= timedelta(0):
            raise ValueError("cool_after must be positive")
        return self

    @classmethod
    def default(cls) -> LeadRules:
        text = resources.files("funnel.defaults").joinpath("leads.toml").read_text("utf-8")
        return cls.model_validate(tomllib.loads(text))

    @classmethod
    def from_file(cls, path: Path) -> LeadRules:
        """Rules from a TOML file in the format of the default (:func:`load_lead_rules`)."""
        return load_lead_rules(path, env={})

    @cached_property
    def click_memory_ms(self) -> int:
        """How long click times matter: a click rule's ``within`` and then its freshness."""
        spans = [r.within + self._cool_after(r) for r in self.rule if r.min_clicks]
        return int(max(spans, default=timedelta(0)) / _MS)

    def _cool_after(self, rule: LeadRule) -> timedelta:
        return rule.cool_after if rule.cool_after is not None else self.cool_after

    def _deciding(self, signals: LeadSignals, at_ms: int) -> tuple[Temperature, int] | None:
        """The temperature of the first rule fresh at ``at_ms`` and the instant it lapses."""
        for rule in self.rule:
            since = rule.since(signals, at_ms)
            fresh_ms = int(self._cool_after(rule) / _MS)
            if since is not None and at_ms - since <= fresh_ms:
                return rule.temperature, since + fresh_ms + 1
        return None

    def temperature(self, signals: LeadSignals, now_ms: int) -> Temperature:
        deciding = self._deciding(signals, now_ms)
        return deciding[0] if deciding else Temperature.COLD

    def cooling(self, signals: LeadSignals, from_ms: int) -> list[tuple[int, Temperature]]:
        """The changes after ``from_ms`` if the signals stay as they are: whenever the deciding
        rule lapses, the next fresh one (or cold) decides from that instant. Each rule lapses
        once, so there are fewer changes than rules."""
        changes: list[tuple[int, Temperature]] = []
        deciding = self._deciding(signals, from_ms)
        current = deciding[0] if deciding else Temperature.COLD
        while deciding is not None:
            at_ms = deciding[1]
            deciding = self._deciding(signals, at_ms)
            now = deciding[0] if deciding else Temperature.COLD
            if now != current:
                changes.append((at_ms, now))
                current = now
        return changes

    def evaluate(self, signals: LeadSignals, at_ms: int) -> Temperature:
        """The temperature at ``at_ms`` (the time of the person's latest event); plans the
        changes to come (``signals.cooling``) until the next event."""
        signals.cooling = [(t, temp.value) for t, temp in self.cooling(signals, at_ms)]
        return self.temperature(signals, at_ms)

    def queue(self, temperature: Temperature) -> str:
        return self.queues.get(temperature, temperature.value)


class LeadRulesError(ValueError):
    """A lead rules file that cannot be used; the message (one line) names the file and what
    is wrong with it."""


def load_lead_rules(path: Path | None = None, env: Mapping[str, str] | None = None) -> LeadRules:
    """The rules in ``path``, else in the file ``FUNNEL_LEADS`` names in ``env`` (default:
    the process environment; empty is unset), else the shipped defaults.

    Raises :class:`LeadRulesError` for a file that cannot be read, is not TOML, or holds
    invalid rules.
    """
    if path is None:
        named = (os.environ if env is None else env).get(LEADS_ENV, "").strip()
        if not named:
            return LeadRules.default()
        path = Path(named)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise LeadRulesError(f"{path}: cannot read the lead rules: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise LeadRulesError(f"{path}: cannot read the lead rules: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LeadRulesError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    try:
        return LeadRules.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(part) for part in error["loc"]) + f": {error['msg']}"
            if error["loc"]
            else error["msg"]
            for error in exc.errors()
        )
        raise LeadRulesError(f"{path}: invalid lead rules: {_one_line(problems)}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
