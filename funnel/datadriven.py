"""Data-driven attribution (DESIGN §7): ``markov`` and ``shapley`` over stored journeys.

Both take every journey of the period, converting and not: a journey is a person's channel
sequence (their touches in time order) and whether it ended in a conversion. Both return each
channel's share of the conversions; shares sum to 1 (when anything converted), so
``share * conversions`` is the channel's credited conversions, comparable with the rule-based
models computed in the stream.

* ``markov`` — first-order Markov chain over ``start → channels → conversion | null``; a
  channel's removal effect is the relative drop in the probability of converting from
  ``start`` when every transition into it goes to ``null`` instead. Shares are the removal
  effects normalised to sum to 1 (never negative).
* ``shapley`` — a cooperative game over channel sets whose worth ``v(S)`` is the number of
  conversions whose journeys used only channels in ``S``. Only converting journeys carry worth
  here; the non-converting ones shape the ``markov`` shares. (A conversion-rate worth was tried
  and gave large negative shares whenever a channel is rare in non-converting journeys, as
  ``Direct`` is: a conversion without touches is a Direct journey, an abandoned visit without
  touches is no journey at all.)
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Journey", "collapse", "markov_shares", "shapley_shares"]

_START, _CONVERSION, _NULL = "(start)", "(conversion)", "(null)"


@dataclass(frozen=True, slots=True)
class Journey:
    """One person's touches (channels, in time order) and whether they converted."""

    channels: tuple[str, ...]
    converted: bool
    lag_ms: int | None = None
    """A conversion's time since the path's first touch (``None``: no touch, or unknown)."""

    @property
    def touches(self) -> int:
        """How many touches the path has (a conversion without any: 0)."""
        return 0 if self.converted and self.lag_ms is None else len(self.channels)


def markov_shares(journeys: Sequence[Journey]) -> dict[str, float]:
    """Each channel's removal-effect share of the conversions (sums to 1; ``{}`` when no
    journey converted)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for journey in journeys:
        path = [_START, *collapse(journey.channels), _CONVERSION if journey.converted else _NULL]
        for here, there in itertools.pairwise(path):
            counts[here][there] += 1
    transitions = {
        here: {there: n / sum(outgoing.values()) for there, n in outgoing.items()}
        for here, outgoing in counts.items()
    }
    channels = sorted(s for s in transitions if s != _START)
    base = _conversion_probability(transitions, removed=None)
    if base <= 0:
        return {}
    effects = {c: max(0.0, 1 - _conversion_probability(transitions, c) / base) for c in channels}
    total = sum(effects.values())
    if total <= 0:
        return {}
    return {c: e / total for c, e in effects.items()}


def collapse(channels: Sequence[str]) -> list[str]:
    """Repeated touches of one channel in a row are one state (a self-loop adds nothing)."""
    out: list[str] = []
    for channel in channels:
        if not out or out[-1] != channel:
            out.append(channel)
    return out


def _conversion_probability(
    transitions: dict[str, dict[str, float]], removed: str | None, *, tolerance: float = 1e-12
) -> float:
    """P(reaching conversion from start), by fixed-point iteration of the absorbing chain."""
    reach = dict.fromkeys(transitions, 0.0)
    for _ in range(10_000):
        delta = 0.0
        for state, outgoing in transitions.items():
            if state == removed:
                continue
            value = 0.0
            for there, p in outgoing.items():
                if there == _CONVERSION:
                    value += p
                elif there != _NULL and there != removed:
                    value += p * reach.get(there, 0.0)
            delta = max(delta, abs(value - reach[state]))
            reach[state] = value
        if delta < tolerance:
            break
    return reach.get(_START, 0.0)


def shapley_shares(journeys: Sequence[Journey]) -> dict[str, float]:
    """Each channel's Shapley share of the conversions (sums to 1; ``{}`` when no journey
    converted).

    The game: ``v(S)`` = conversions of the journeys whose channels all lie in ``S``. Its
    Shapley value has a closed form: each conversion is shared equally by the distinct
    channels of its journey (Zhao et al., 2018), so no subset enumeration is needed.
    """
    values: dict[str, float] = defaultdict(float)
    for journey in journeys:
        if journey.converted and journey.channels:
            players = set(journey.channels)
            for player in players:
                values[player] += 1 / len(players)
    total = sum(values.values())
    if total <= 0:
        return {}
    return {player: value / total for player, value in sorted(values.items())}
