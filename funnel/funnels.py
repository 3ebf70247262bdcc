"""Funnel definitions (DESIGN §6) as configured data, loaded from TOML."""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from funnel.events import Event, EventType, Scalar

__all__ = [
    "FunnelCatalog",
    "FunnelMode",
    "FunnelSpec",
    "Step",
    "StepPlan",
    "parse_duration",
    "where_values",
]

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: object) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"500ms"``, ``"2w"`` or a timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. '30d', '12h', '90m')")
    return int(match.group(1)) * _UNITS[match.group(2)]


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class FunnelMode(StrEnum):
    """How steps must follow each other (DESIGN §6)."""

    ORDERED = "ordered"
    STRICT = "strict"
    ANY = "any"


class Step(BaseModel):
    """One funnel step: an event type, optionally narrowed by property filters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: EventType
    where: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def matches(self, event: Event, *, also_repeat: bool = False) -> bool:
        """Whether ``event`` counts as this step (``also_repeat``: the event is a repeat
        purchase too, such as a payment for a new order after a first payment)."""
        return self.matches_values(
            event.type, where_values(event, self.where), also_repeat=also_repeat
        )

    def matches_values(
        self, kind: EventType, values: Mapping[str, Scalar], *, also_repeat: bool = False
    ) -> bool:
        """:meth:`matches` for an event of type ``kind`` whose filtered fields are
        ``values`` (:func:`where_values`)."""
        if kind is not self.type and not (also_repeat and self.type is EventType.REPEAT):
            return False
        return all(values.get(key) == expected for key, expected in self.where.items())


def where_values(event: Event, keys: Iterable[str]) -> dict[str, Scalar]:
    """The values step filters on ``keys`` compare: the event's property of that name, else
    its lead field (``form``, ``intent``); keys the event has neither of are left out."""
    values: dict[str, Scalar] = {}
    for key in keys:
        actual = event.properties.get(key)
        if actual is None and event.lead is not None:
            actual = getattr(event.lead, key, None)
        if actual is not None:
            values[key] = actual
    return values


class FunnelSpec(BaseModel):
    """A named funnel: ordered steps, a conversion window and an ordering mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
    steps: tuple[Step, ...]
    window: Duration = timedelta(days=30)
    mode: FunnelMode = FunnelMode.ORDERED

    @model_validator(mode="after")
    def _valid(self) -> FunnelSpec:
        if len(self.steps) < 2:
            raise ValueError(f"funnel {self.name!r} needs at least two steps")
        if len({s.name for s in self.steps}) != len(self.steps):
            raise ValueError(f"funnel {self.name!r} has duplicate step names")
        if self.window <= timedelta(0):
            raise ValueError(f"funnel {self.name!r} needs a positive window")
        return self

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the definition (steps, window, mode): a person's progress folded under
        another fingerprint is rebuilt (:func:`funnel.processor.upgraded`)."""
        text = self.model_dump_json(exclude={"name"})
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    @cached_property
    def window_ms(self) -> int:
        return int(self.window / timedelta(milliseconds=1))

    @cached_property
    def _steps_by_type(self) -> dict[tuple[EventType, bool], tuple[int, ...]]:
        """``(event type, also a repeat)`` → the indexes of the steps it may count as (the
        candidates to match), in step order."""
        index: dict[EventType, list[int]] = {}
        for i, step in enumerate(self.steps):
            index.setdefault(step.type, []).append(i)
        repeats = index.get(EventType.REPEAT, [])
        table: dict[tuple[EventType, bool], tuple[int, ...]] = {}
        for kind in EventType:
            own = index.get(kind, [])
            table[kind, False] = tuple(own)
            table[kind, True] = tuple(sorted({*own, *repeats}))
        return table

    @cached_property
    def _filtered(self) -> bool:
        """Whether any step has a property filter."""
        return any(step.where for step in self.steps)

    def matching_steps(self, event: Event, *, also_repeat: bool = False) -> tuple[int, ...]:
        """0-based indexes of the steps ``event`` counts as, in step order."""
        return self.steps_for(
            event.type, where_values(event, self.where_keys), also_repeat=also_repeat
        )

    @cached_property
    def where_keys(self) -> frozenset[str]:
        """The fields the steps' filters compare."""
        return frozenset(key for step in self.steps for key in step.where)

    def steps_for(
        self, kind: EventType, values: Mapping[str, Scalar], *, also_repeat: bool = False
    ) -> tuple[int, ...]:
        """:meth:`matching_steps` for an event of type ``kind`` whose filtered fields are
        ``values`` (:func:`where_values`)."""
        candidates = self._steps_by_type[kind, also_repeat]
        if not self._filtered:
            return candidates
        steps = self.steps
        return tuple(
            i
            for i in candidates
            if not steps[i].where or steps[i].matches_values(kind, values, also_repeat=also_repeat)
        )


class StepPlan(NamedTuple):
    """One funnel as the fold visits it for one kind of event (:attr:`FunnelCatalog.plan`)."""

    spec: FunnelSpec
    name: str
    steps: tuple[int, ...]
    """The steps the event counts as, unless ``filtered`` (then :meth:`FunnelSpec.steps_for`
    narrows these candidates by the event's values)."""
    filtered: bool
    window_ms: int
    mode: str
    size: int
    """How many steps the funnel has."""
    names: tuple[str, ...]
    """The steps' names."""


class FunnelCatalog(BaseModel):
    """All configured funnels, by name."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    specs: tuple[FunnelSpec, ...] = Field(alias="funnel")
    """The funnels, in their configured order (``[[funnel]]`` tables in TOML)."""

    @model_validator(mode="after")
    def _unique(self) -> FunnelCatalog:
        names = [f.name for f in self.specs]
        if len(set(names)) != len(names):
            raise ValueError("funnel names must be unique")
        return self

    @classmethod
    def default(cls) -> FunnelCatalog:
        """The funnels shipped with funnel."""
        text = resources.files("funnel.defaults").joinpath("funnels.toml").read_text("utf-8")
        return cls.model_validate(tomllib.loads(text))

    @classmethod
    def from_file(cls, path: Path) -> FunnelCatalog:
        return cls.model_validate(tomllib.loads(path.read_text("utf-8")))

    @cached_property
    def fingerprints(self) -> dict[str, str]:
        """Funnel name → the fingerprint of its definition."""
        return {spec.name: spec.fingerprint for spec in self.specs}

    @cached_property
    def where_keys(self) -> frozenset[str]:
        """The fields any funnel's step filters compare (what a compact log entry keeps)."""
        return frozenset(key for spec in self.specs for key in spec.where_keys)

    @cached_property
    def shapes(self) -> tuple[tuple[str, int, int], ...]:
        """Per funnel, in configured order: its name, how many steps, its window (ms)."""
        return tuple((spec.name, len(spec.steps), spec.window_ms) for spec in self.specs)

    @cached_property
    def plan(self) -> dict[tuple[EventType, bool], tuple[StepPlan, ...]]:
        """``(event type, also a repeat)`` → the funnels an event of that kind can change,
        in configured order: those with a step of its type, and the strict ones (an event of
        no step stops a strict scan). Any other funnel is left as it is by such an event."""
        plan: dict[tuple[EventType, bool], tuple[StepPlan, ...]] = {}
        for kind in EventType:
            for repeat in (False, True):
                visits = []
                for spec in self.specs:
                    steps = spec._steps_by_type[kind, repeat]
                    if steps or spec.mode is FunnelMode.STRICT:
                        visits.append(
                            StepPlan(
                                spec,
                                spec.name,
                                steps,
                                spec._filtered,
                                spec.window_ms,
                                spec.mode.value,
                                len(spec.steps),
                                tuple(step.name for step in spec.steps),
                            )
                        )
                plan[kind, repeat] = tuple(visits)
        return plan

    def get(self, name: str) -> FunnelSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        known = ", ".join(f.name for f in self.specs)
        raise KeyError(f"unknown funnel {name!r} (configured: {known})")
