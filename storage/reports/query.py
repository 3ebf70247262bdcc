"""Questions asked at query time: funnels given on the command line, filters and breakdowns
over any field of the stored events.

A **funnel query** (:class:`FunnelQuery`) is a configured funnel (:meth:`FunnelQuery.of`) or
one written out (:func:`parse_steps`), e.g. ``--steps 'impression,click,lead[form=demo],order'``:

* a step is an event type, optionally narrowed by conditions in brackets
  (``lead[form=demo]``, ``click[utm_source=google,device=mobile]``);
* a step that starts with ``/`` is a page: any event whose URL path starts with it
  (``/pricing``);
* a step that starts with ``!`` excludes: a person who does it after entering the funnel and
  within the window is left out of the answer (``!payment[status=refunded]``);
* ``--window`` (``7d``, ``12h``) and ``--mode ordered|strict|any`` as in the funnels' TOML.

A **condition** (:class:`Condition`) is ``field op value`` with ``=``, ``!=``, ``^=``
(starts with) or ``*=`` (contains). Fields (:data:`FIELDS`): the UTM fields, channel,
referrer host, landing page (the URL path), URL, device, browser, OS, manager, and any event
property (``property:NAME``, or a bare name that is none of the above). A ``--where`` is a
comma-separated list of conditions, all of which must hold.

A **breakdown** of a touch field (:data:`TOUCH_BREAKDOWNS`, or ``property:NAME``) groups by
that field of the touch a report is about (for funnels: the event that entered the funnel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from funnel.events import EventType
from funnel.funnels import FunnelMode, FunnelSpec, parse_duration

__all__ = [
    "FIELDS",
    "TOUCH_BREAKDOWNS",
    "Condition",
    "FunnelQuery",
    "QueryError",
    "StepQuery",
    "all_of",
    "breakdown_sql",
    "is_touch_breakdown",
    "parse_conditions",
    "parse_mode",
    "parse_steps",
    "parse_window",
]

#: Field name → its SQL over the columns of ``events``.
FIELDS: dict[str, str] = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "campaign",
    "utm_term": "term",
    "utm_content": "content",
    "channel": "channel",
    "campaign": "campaign",
    "referrer_host": "referrer_host",
    "landing_page": "path(url)",
    "url": "url",
    "device": "device",
    "browser": "browser",
    "os": "os",
    "manager": "manager_id",
}
#: Breakdowns by a field of a touch (besides ``channel`` and ``campaign``, which every touch
#: report has): what ``--by`` takes, and ``property:NAME``.
TOUCH_BREAKDOWNS: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "referrer_host",
    "landing_page",
    "device",
    "browser",
    "os",
)
PROPERTY = "property:"
#: Properties a lead may carry as fields of its own (``lead.form``, ``lead.intent``): a
#: condition on them holds on either, as a configured step's filter does.
_LEAD_FIELDS = {f"{PROPERTY}form": "lead_form", f"{PROPERTY}intent": "lead_intent"}
Op = Literal["=", "!=", "^=", "*="]
_CONDITION = re.compile(r"^\s*([A-Za-z0-9_.:\-]+)\s*(!=|\^=|\*=|=)(.*)$")
_STEP = re.compile(r"^(!?)([a-z_]+)(?:\[(.*)\])?$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_MAX_STEPS = 20
_MAX_CONDITIONS = 20


class QueryError(ValueError):
    """A funnel, condition or breakdown that cannot be asked, with what can."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value`` over an event (module docstring)."""

    field: str
    op: Op
    value: str

    def sql(self, params: dict[str, object] | None, name: str) -> str:
        """The condition over a row of ``events``; the value bound in ``params`` as
        ``name`` (``None``: quoted inline)."""
        value = _bind(params, name, self.value)
        if self.field.startswith(PROPERTY):
            key = _bind(params, f"{name}k", self.field.removeprefix(PROPERTY))
            column = f"properties[{key}]"
        else:
            column = FIELDS[self.field]
        test = {
            "=": f"{column} = {value}",
            "!=": f"{column} != {value}",
            "^=": f"startsWith({column}, {value})",
            "*=": f"position({column}, {value}) > 0",
        }[self.op]
        lead_column = _LEAD_FIELDS.get(self.field)
        if lead_column is not None:  # the lead's own field, as the stream's step filters read it
            alternative = test.replace(column, lead_column, 1)
            joined = " AND " if self.op == "!=" else " OR "  # != holds when neither is it
            test = f"({test}{joined}{alternative})"
        return test


@dataclass(frozen=True, slots=True)
class StepQuery:
    """One step: an event type (``None``: any event, a page step), its conditions, and
    whether it excludes."""

    name: str
    type: EventType | None
    conditions: tuple[Condition, ...] = ()
    exclude: bool = False

    def sql(self, params: dict[str, object] | None, name: str) -> str:
        parts = (
            [] if self.type is None else [f"event_type = {_bind(params, name, self.type.value)}"]
        )
        parts += [f"({c.sql(params, f'{name}_{j}')})" for j, c in enumerate(self.conditions)]
        return " AND ".join(parts) or "1"


@dataclass(frozen=True, slots=True)
class FunnelQuery:
    """A funnel as the chains compute it (:mod:`storage.reports.funnels`)."""

    name: str
    steps: tuple[StepQuery, ...]
    window_ms: int
    mode: FunnelMode
    exclusions: tuple[StepQuery, ...] = ()
    where: tuple[Condition, ...] = ()
    """Conditions on the step-1 event that enters the funnel."""
    configured: bool = False
    """The funnel is a configured one as it is: the stream's facts answer it too."""

    @classmethod
    def of(cls, spec: FunnelSpec) -> FunnelQuery:
        """A configured funnel (its step filters compare properties, as the stream does)."""
        steps = tuple(
            StepQuery(
                step.name,
                step.type,
                # as the stream stores properties: str() of the value
                tuple(Condition(PROPERTY + k, "=", str(v)) for k, v in step.where.items()),
            )
            for step in spec.steps
        )
        return cls(spec.name, steps, spec.window_ms, spec.mode, configured=True)

    def adjusted(
        self,
        *,
        window_ms: int | None = None,
        mode: FunnelMode | None = None,
        where: tuple[Condition, ...] = (),
    ) -> FunnelQuery:
        """This funnel with another window or mode, entered only through step-1 events that
        meet ``where`` too; no longer the configured funnel when anything changed."""
        if window_ms in (None, self.window_ms) and mode in (None, self.mode) and not where:
            return self
        return replace(
            self,
            window_ms=window_ms or self.window_ms,
            mode=mode or self.mode,
            where=self.where + where,
            configured=False,
        )

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]


def parse_steps(
    text: str, *, window: str | None = None, mode: str | None = None, name: str | None = None
) -> FunnelQuery:
    """A funnel written out (module docstring); raises :class:`QueryError`."""
    items = _split(text)
    if len(items) > _MAX_STEPS + _MAX_STEPS:
        raise QueryError(f"at most {_MAX_STEPS} steps and {_MAX_STEPS} exclusions")
    steps: list[StepQuery] = []
    exclusions: list[StepQuery] = []
    for item in items:
        step = _step(item)
        (exclusions if step.exclude else steps).append(step)
    if len(steps) < 2 or len(steps) > _MAX_STEPS:
        raise QueryError(f"a funnel has 2 to {_MAX_STEPS} steps, not {len(steps)}: {text!r}")
    if len({s.name for s in steps}) != len(steps):
        raise QueryError(f"a step is given twice: {text!r}")
    if name is None:
        name = " → ".join(s.name for s in steps)
        name += "".join(f", not {s.name}" for s in exclusions)
    return FunnelQuery(
        name,
        tuple(steps),
        parse_window(window or "30d"),
        parse_mode(mode or "ordered"),
        tuple(exclusions),
    )


def parse_window(text: str) -> int:
    """A conversion window (``7d``, ``12h``) in milliseconds, up to ten years."""
    try:
        span = parse_duration(text)
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    if not timedelta(0) < span <= timedelta(days=3650):
        raise QueryError(f"the window is from 1ms to 3650d, not {text!r}")
    return int(span / timedelta(milliseconds=1))


def parse_mode(text: str) -> FunnelMode:
    try:
        return FunnelMode(text)
    except ValueError:
        modes = ", ".join(m.value for m in FunnelMode)
        raise QueryError(f"unknown mode {text!r}: one of {modes}") from None


def parse_conditions(text: str) -> tuple[Condition, ...]:
    """``utm_source=google,device=mobile``: every condition must hold."""
    items = _split(text)
    if len(items) > _MAX_CONDITIONS:
        raise QueryError(f"at most {_MAX_CONDITIONS} conditions")
    return tuple(_condition(item) for item in items)


def all_of(conditions: tuple[Condition, ...], params: dict[str, object]) -> str:
    """Every condition as one SQL expression over a row of ``events`` (``1``: none), its
    values bound in ``params`` (``w0``, ``w1``…)."""
    return " AND ".join(f"({c.sql(params, f'w{i}')})" for i, c in enumerate(conditions)) or "1"


def is_touch_breakdown(by: str) -> bool:
    """Whether ``by`` is a field of a touch (:data:`TOUCH_BREAKDOWNS` or ``property:NAME``)."""
    if by.startswith(PROPERTY):
        return bool(_NAME.match(by.removeprefix(PROPERTY)))
    return by in TOUCH_BREAKDOWNS


def breakdown_sql(by: str, params: dict[str, object] | None) -> str:
    """The value of touch breakdown ``by`` over a row of ``events`` (``(none)`` when empty)."""
    if by.startswith(PROPERTY):
        key = _bind(params, "by_key", by.removeprefix(PROPERTY))
        value = f"properties[{key}]"
    else:
        value = FIELDS[by]
    return f"if({value} = '', '(none)', toString({value}))"


def _step(item: str) -> StepQuery:
    if item.startswith(("/", "!/")):
        path = item.removeprefix("!")
        return StepQuery(path, None, (Condition("landing_page", "^=", path),), item != path)
    match = _STEP.match(item)
    if not match:
        raise QueryError(
            f"not a step: {item!r} (an event type, e.g. lead or lead[form=demo], a page path "
            "such as /pricing, or !type to exclude)"
        )
    bang, kind, inner = match.groups()
    try:
        event_type = EventType(kind)
    except ValueError:
        types = ", ".join(t.value for t in EventType)
        raise QueryError(f"unknown event type {kind!r} in {item!r}: one of {types}") from None
    conditions = parse_conditions(inner) if inner else ()
    return StepQuery(item.removeprefix("!"), event_type, conditions, bool(bang))


def _condition(item: str) -> Condition:
    match = _CONDITION.match(item)
    if not match:
        raise QueryError(
            f"not a condition: {item!r} (field=value, field!=value, field^=prefix or field*=part)"
        )
    field, op, value = match.group(1), match.group(2), match.group(3).strip()
    if not field.startswith(PROPERTY) and field not in FIELDS:
        field = PROPERTY + field  # any other name is an event property
    if not _NAME.match(field.removeprefix(PROPERTY)):
        raise QueryError(f"not a field name: {field!r}")
    if len(value) > 1000:
        raise QueryError("a condition's value is at most 1000 characters")
    return Condition(field, op, value)  # type: ignore[arg-type]


def _split(text: str) -> list[str]:
    """Comma-separated items; commas inside brackets stay in their item."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    if depth != 0:
        raise QueryError(f"unbalanced brackets in {text!r}")
    if any(not item for item in items):
        raise QueryError(f"an empty item in {text!r}")
    return items


def _bind(params: dict[str, object] | None, name: str, text: str) -> str:
    if params is None:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    params[name] = text
    return f"{{{name}:String}}"
