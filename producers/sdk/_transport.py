"""The transport contract: one batch in, one verdict out.

A :class:`Transport` is called from the sender thread only, one batch at a time. Its verdict
says what became of every event in the batch: :class:`Delivered` (durable, except the listed
rejections), :class:`Retry` (not stored, or only partly), :class:`TooLarge` (split and send
again) or :class:`Refused` (the whole batch, for good). A transport may also raise; the
sender treats that as :class:`Retry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from funnel.clock import SystemClock
from funnel.events import Event

__all__ = [
    "Delivered",
    "Errors",
    "Refused",
    "Retry",
    "SendResult",
    "TooLarge",
    "Transport",
    "batch_error",
    "wall_clock",
]

#: The default clock of ``sent_at`` stamps (and of ``occurred_at``): tz-aware UTC.
wall_clock: Callable[[], datetime] = SystemClock().now

#: Machine-readable reasons of a rejection: ``{"field", "reason", "code"}`` each.
Errors = tuple[dict[str, str], ...]


def batch_error(code: str, reason: str) -> Errors:
    """The reasons of an event refused with its whole batch (no single field is at fault)."""
    return ({"field": "$", "reason": reason, "code": code},)


@dataclass(frozen=True, slots=True)
class Delivered:
    """The batch was answered: listed indexes are refused for good, the rest are durable."""

    rejected: Mapping[int, Errors] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retry:
    """Not stored; send again. ``indexes`` (when given) are the only ones not durable."""

    reason: str
    retry_after: float | None = None
    indexes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class TooLarge:
    """The batch is too large for the destination: split it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The whole batch is refused for good (e.g. a bad write key)."""

    code: str
    reason: str


SendResult = Delivered | Retry | TooLarge | Refused


class Transport(Protocol):
    """Sends one batch and says what became of it. Called from the sender thread only."""

    def send(self, events: Sequence[Event]) -> SendResult: ...

    def close(self) -> None: ...
