"""Lead temperature (DESIGN §8): cold, warm or hot, by configurable rules, with routing.

:class:`LeadRules` decides a temperature from a :class:`LeadSignals` snapshot (open orders,
latest intent, recent clicks); the stream core keeps the signals per person and emits a change
whenever the temperature moves. Pure: time is passed in.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from funnel.funnels import parse_duration

__all__ = ["LeadRule", "LeadRules", "LeadSignals", "Temperature"]


class Temperature(StrEnum):
    COLD = "cold"
    WARM = "warm"
    HOT = "hot"


@dataclass(slots=True)
class LeadSignals:
    """What the temperature depends on, kept per person by the stream core."""

    is_lead: bool = False
    intent: str = ""
    open_orders: list[str] = field(default_factory=list)
    click_times_ms: list[int] = field(default_factory=list)
    """Recent click times (pruned to the longest ``within`` of the rules)."""


class LeadRule(BaseModel):
    """One rule: a temperature and its conditions (all given conditions must hold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: Temperature
    open_order: bool = False
    intents: tuple[str, ...] = ()
    min_clicks: int = 0
    within: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(days=7)

    @model_validator(mode="after")
    def _has_condition(self) -> LeadRule:
        if not (self.open_order or self.intents or self.min_clicks):
            raise ValueError(f"a {self.temperature} rule needs a condition")
        return self

    def matches(self, signals: LeadSignals, now_ms: int) -> bool:
        if self.open_order and not signals.open_orders:
            return False
        if self.intents and signals.intent not in self.intents:
            return False
        if self.min_clicks:
            since = now_ms - int(self.within / timedelta(milliseconds=1))
            if sum(1 for at in signals.click_times_ms if since <= at <= now_ms) < self.min_clicks:
                return False
        return True


class LeadRules(BaseModel):
    """Ordered rules (first match wins; no match is cold) and the queue per temperature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: tuple[LeadRule, ...]
    queues: dict[Temperature, str]

    @classmethod
    def default(cls) -> LeadRules:
        text = resources.files("funnel.defaults").joinpath("leads.toml").read_text("utf-8")
        return cls.model_validate(tomllib.loads(text))

    @classmethod
    def from_file(cls, path: Path) -> LeadRules:
        return cls.model_validate(tomllib.loads(path.read_text("utf-8")))

    @property
    def click_memory_ms(self) -> int:
        """How long click times matter (the longest ``within`` of any click rule)."""
        spans = [r.within for r in self.rule if r.min_clicks] or [timedelta(0)]
        return int(max(spans) / timedelta(milliseconds=1))

    def temperature(self, signals: LeadSignals, now_ms: int) -> Temperature:
        for rule in self.rule:
            if rule.matches(signals, now_ms):
                return rule.temperature
        return Temperature.COLD

    def queue(self, temperature: Temperature) -> str:
        return self.queues.get(temperature, temperature.value)
