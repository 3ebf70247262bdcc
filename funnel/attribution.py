"""Rule-based attribution at write time (DESIGN §7).

A conversion's path is the person's impression and click touches in the lookback window
(default 30 days) up to the conversion. Every model splits a credit of exactly 1 over the
path's touches; credits of touches with the same channel and campaign are summed into one
:class:`Credit`. A conversion with no touches credits ``Direct`` in full. Revenue is split
with the largest-remainder method so that the revenue credits add up to the revenue exactly.

Models: ``first_touch``, ``last_touch``, ``last_non_direct``, ``linear``, ``time_decay``
(weight ``2^(-Δt/half_life)``, half-life 7 days), ``position_based`` (40/20/40; one touch
100%, two 50/50) and ``w_shaped`` (30% first touch, 30% the touch that created the lead, 30%
the touch that created the order, 10% over the rest; ``position_based`` when the path has no
lead or no order milestone). Data-driven models (markov, shapley) run at query time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import msgspec

__all__ = [
    "MODELS",
    "AttributionSettings",
    "Conversion",
    "Credit",
    "PathTouch",
    "attribute",
    "credit_history",
    "split_revenue",
]

DIRECT = "Direct"


class PathTouch(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One touch of a path: when, and through which channel and campaign."""

    at_ms: int
    channel: str
    campaign: str = ""


@dataclass(frozen=True, slots=True)
class Credit:
    """The share of one conversion a channel and campaign earned under one model."""

    model: str
    channel: str
    campaign: str
    credit: float
    revenue_credit: Decimal


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    lookback: timedelta = timedelta(days=30)
    half_life: timedelta = timedelta(days=7)


Weights = list[float]


@dataclass(frozen=True, slots=True)
class _Context:
    """What a model may look at besides the path: the conversion time and the milestones."""

    converted_at_ms: int
    half_life_ms: float
    lead: int | None  # index of the touch that created the lead, if any
    order: int | None  # index of the touch that created the order, if any


def _first(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    return [1.0 if i == 0 else 0.0 for i in range(len(path))]


def _last(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    return [1.0 if i == len(path) - 1 else 0.0 for i in range(len(path))]


def _last_non_direct(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    chosen = max((i for i, t in enumerate(path) if t.channel != DIRECT), default=len(path) - 1)
    return [1.0 if i == chosen else 0.0 for i in range(len(path))]


def _linear(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    return [1.0 / len(path)] * len(path)


def _time_decay(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    return [2.0 ** (-(ctx.converted_at_ms - t.at_ms) / ctx.half_life_ms) for t in path]


def _position(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    n = len(path)
    if n <= 2:
        return [1.0 / n] * n
    middle = 0.2 / (n - 2)
    return [0.4] + [middle] * (n - 2) + [0.4]


def _w_shaped(path: Sequence[PathTouch], ctx: _Context) -> Weights:
    if ctx.lead is None or ctx.order is None:
        return _position(path, ctx)
    roles = [0, ctx.lead, ctx.order]
    others = [i for i in range(len(path)) if i not in roles]
    role_share = 0.3 if others else 1.0 / 3.0  # with no other touch the roles share it all
    weights = [0.0] * len(path)
    for index in roles:
        weights[index] += role_share
    for index in others:
        weights[index] += 0.1 / len(others)
    return weights


#: Model name → weights of each touch of the path (any scale: they are normalised).
MODELS: dict[str, Callable[[Sequence[PathTouch], _Context], Weights]] = {
    "first_touch": _first,
    "last_touch": _last,
    "last_non_direct": _last_non_direct,
    "linear": _linear,
    "time_decay": _time_decay,
    "position_based": _position,
    "w_shaped": _w_shaped,
}


def _milestone(path: Sequence[PathTouch], at_ms: int | None) -> int | None:
    """Index of the last touch at or before ``at_ms`` (the touch that created a milestone)."""
    if at_ms is None:
        return None
    found = None
    for index, touch in enumerate(path):
        if touch.at_ms <= at_ms:
            found = index
    return found


def attribute(
    touches: Sequence[PathTouch],
    converted_at_ms: int,
    revenue: Decimal,
    *,
    lead_at_ms: int | None = None,
    order_at_ms: int | None = None,
    settings: AttributionSettings | None = None,
) -> list[Credit]:
    """Credits of one conversion under every rule-based model (credits per model sum to 1).

    ``touches`` are the person's touches in time order (any span: the lookback is applied
    here). ``lead_at_ms``/``order_at_ms`` are the times of the lead and order that preceded
    the conversion, for ``w_shaped``.
    """
    settings = settings or AttributionSettings()
    start = converted_at_ms - int(settings.lookback / timedelta(milliseconds=1))
    path = [t for t in touches if start <= t.at_ms <= converted_at_ms]
    if not path:
        return [Credit(model, DIRECT, "", 1.0, revenue) for model in MODELS]
    ctx = _Context(
        converted_at_ms,
        settings.half_life / timedelta(milliseconds=1),
        _milestone(path, lead_at_ms),
        _milestone(path, order_at_ms),
    )
    groups: dict[tuple[str, str], list[int]] = {}  # the same for every model
    for index, touch in enumerate(path):
        groups.setdefault((touch.channel, touch.campaign), []).append(index)
    credits: list[Credit] = []
    for model, rule in MODELS.items():
        credits.extend(_merge(model, groups, rule(path, ctx), revenue))
    return credits


def _merge(
    model: str, groups: dict[tuple[str, str], list[int]], weights: Weights, revenue: Decimal
) -> list[Credit]:
    """Sum weights per (channel, campaign) (``groups``: the indexes of the path's touches
    with each, in order of first appearance), renormalise to exactly 1, split the revenue."""
    totals = {key: sum(map(weights.__getitem__, indexes)) for key, indexes in groups.items()}
    named = [k for k, w in totals.items() if w > 0]
    shares = [totals[k] for k in named]
    scale = sum(shares)
    shares = [s / scale for s in shares]
    shares[-1] = 1.0 - sum(shares[:-1])  # the float sum is 1 to the last bit we can make it
    money = split_revenue(revenue, shares)
    return [
        Credit(model, channel, campaign, share, amount)
        for (channel, campaign), share, amount in zip(named, shares, money, strict=True)
    ]


def split_revenue(revenue: Decimal, shares: Sequence[float], places: int = 4) -> list[Decimal]:
    """Split ``revenue`` by ``shares`` into amounts of ``places`` decimals that add up exactly
    (largest remainder: the rounding cents go to the largest fractional parts)."""
    unit = Decimal(1).scaleb(-places)
    exact = [revenue * Decimal(repr(share)) for share in shares]
    floored = [amount.quantize(unit, rounding=ROUND_DOWN) for amount in exact]
    left = int(((revenue - sum(floored, Decimal(0))) / unit).to_integral_value())
    order = sorted(range(len(shares)), key=lambda i: exact[i] - floored[i], reverse=True)
    for i in order[: max(left, 0)]:
        floored[i] += unit
    return floored


@dataclass(frozen=True, slots=True)
class Conversion:
    """A conversion of a person's history as :func:`credit_history` reads it."""

    at_ms: int
    kind: str
    """``lead``, ``order``, ``payment`` or ``repeat``."""
    revenue: Decimal


def credit_history(
    touches: Sequence[PathTouch],
    conversions: Sequence[Conversion],
    *,
    since_ms: int = 0,
    settings: AttributionSettings | None = None,
) -> Iterator[tuple[Conversion, bool, list[Credit]]]:
    """The credits of each lead, payment and repeat of one person's history (in time order)
    from ``since_ms`` on, as the stream gives them: each over the touches up to it, with the
    latest lead and order before it as ``w_shaped``'s milestones. Yields the conversion,
    whether it is the person's first payment (earlier ones before ``since_ms`` count), and
    its credits under every rule-based model."""
    lead_at: int | None = None
    order_at: int | None = None
    paid = False
    for conversion in conversions:
        at, kind = conversion.at_ms, conversion.kind
        if kind == "lead":
            lead_at = at
        elif kind == "order":
            order_at = at
        if kind != "order" and at >= since_ms:
            earned = [t for t in touches if t.at_ms <= at]
            credits = attribute(
                earned,
                at,
                conversion.revenue,
                lead_at_ms=lead_at,
                order_at_ms=order_at,
                settings=settings,
            )
            yield conversion, kind == "payment" and not paid, credits
        paid = paid or kind == "payment"
