"""What the client reports: flush results, rejected events and counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from funnel.events import Event
from producers.sdk._transport import Errors

__all__ = ["ClientStats", "FlushResult", "RejectedEvent"]


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the destination refused for good, with machine-readable reasons.

    ``event`` is the refused event itself (e.g. for a local dead-letter file); it takes no
    part in equality.
    """

    event_id: str
    errors: Errors
    event: Event | None = field(default=None, compare=False, repr=False)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.get("code", "invalid") for e in self.errors)


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What happened since the previous result (each outcome is reported by one result).

    ``failed`` lists the ids of events tracked before the flush that are still held (kept and
    retried later); ``timed_out`` says the flush returned at its timeout rather than after a
    failed retry cycle. ``rejected`` keeps at most ``max_queue`` unreported rejections (older
    ones were still counted, logged and passed to ``on_rejected``).
    """

    delivered: int = 0
    rejected: tuple[RejectedEvent, ...] = ()
    failed: tuple[str, ...] = ()
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Every event was delivered."""
        return not self.rejected and not self.failed


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters since the client started, and the events held now."""

    tracked: int
    delivered: int
    rejected: int
    retries: int
    failed_cycles: int
    held: int
