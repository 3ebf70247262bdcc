"""Time is passed in: the core never reads the wall clock itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Clock(Protocol):
    """Something that tells the current time as a tz-aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock (for adapters; the core receives times, it does not read them)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests, simulations, replays)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a tz-aware datetime")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        self._now = when


def to_millis(when: datetime) -> int:
    """Milliseconds since the Unix epoch of a tz-aware datetime (ClickHouse DateTime64(3))."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: times in funnel are always tz-aware")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_millis(millis: int) -> datetime:
    """The UTC datetime of a millisecond timestamp."""
    return _EPOCH + timedelta(milliseconds=millis)


def to_micros(when: datetime) -> int:
    """Microseconds since the Unix epoch of a tz-aware datetime (an event's exact time)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: times in funnel are always tz-aware")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of a microsecond timestamp."""
    return _EPOCH + timedelta(microseconds=micros)
