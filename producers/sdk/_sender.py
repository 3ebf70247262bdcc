"""The sender: the queue of held events and the one thread that delivers them.

Events wait in a queue in ``track`` order. The thread takes a batch when it is full, when a
flush asks for it, or when its oldest event waited ``flush_interval_s``; it hands the batch to
the transport and acts on the verdict: settle it (delivered or rejected), split it (too
large), or retry it with exponential backoff and full jitter. After ``max_retries`` failed
retries it puts the batch back at the head of the queue, ends the retry cycle and pauses for
``backoff_cap_s`` (a flush resumes it at once). One lock guards all of this state; the
transport is called without it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from funnel.events import Event
from producers.sdk._exceptions import ClientClosed, QueueFull
from producers.sdk._results import ClientStats, FlushResult, RejectedEvent
from producers.sdk._transport import (
    Delivered,
    Errors,
    Refused,
    Retry,
    SendResult,
    TooLarge,
    Transport,
    batch_error,
)

__all__ = ["Sender"]

log = logging.getLogger("producers.sdk")


@dataclass(slots=True)
class _Held:
    seq: int
    event: Event
    queued_at: float


def _each(part: list[_Held], errors: Errors) -> dict[int, Errors]:
    """The same ``errors`` for every event of ``part`` (refused with its batch)."""
    return dict.fromkeys(range(len(part)), errors)


class Sender:
    """Holds events until the transport settles them; runs the sender thread.

    ``put`` never blocks on I/O; ``flush`` and ``close`` block (see their docstrings). Every
    method is thread-safe; only ``flush`` and ``close`` may not be called from the sender
    thread (``on_rejected`` runs there).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        batch_size: int,
        flush_interval_s: float,
        max_queue: int,
        max_retries: int,
        backoff_base_s: float,
        backoff_cap_s: float,
        on_rejected: Callable[[RejectedEvent], None] | None = None,
        rng: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._transport = transport
        self._on_rejected = on_rejected
        self._rng = rng or random.random
        self._abort = threading.Event()
        self._sleep = sleep or self._abort.wait

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the sender waits for events
        self._settled = threading.Condition(self._lock)  # flushes wait for outcomes
        self._queue: deque[_Held] = deque()  # ascending seq (re-queued events go in front)
        self._inflight: dict[int, _Held] = {}  # the batch the sender is working on, by seq
        self._next_seq = 0
        self._batch_limit = batch_size  # lowered after a 413
        self._flush_through = -1  # send at once every event with seq ≤ this
        self._paused_until: float | None = None
        self._closed = False
        self._stop = False
        self._unreported_delivered = 0
        self._unreported_rejected: deque[RejectedEvent] = deque(maxlen=max_queue)
        self._tracked = self._delivered = self._rejected = self._retries = self._cycles = 0

        self._thread = threading.Thread(target=self._run, name="funnel-sdk-sender", daemon=True)
        self._thread.start()

    # -- called by the client ------------------------------------------------------------

    def put(self, event: Event) -> None:
        """Queue ``event``; raise :class:`ClientClosed` or :class:`QueueFull` instead."""
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            if len(self._queue) + len(self._inflight) >= self.max_queue:
                raise QueueFull(f"{self.max_queue} events are waiting for delivery")
            self._queue.append(_Held(self._next_seq, event, time.monotonic()))
            self._next_seq += 1
            self._tracked += 1
            if len(self._queue) == 1 or len(self._queue) >= self._batch_limit:
                self._work.notify()

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Block until every event put before the call is settled (see ``FunnelClient``)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() called from the sender thread (on_rejected?)")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._next_seq - 1
            cycles = self._cycles
            self._flush_through = max(self._flush_through, target)
            self._paused_until = None
            self._work.notify()
            timed_out = False
            while not self._settled_through(target) and self._cycles == cycles:
                if not self._thread.is_alive():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    break
                self._settled.wait(remaining)
            return self._report(target, timed_out)

    def close(self, timeout: float | None = None) -> FlushResult:
        """Take no more events, flush, then stop the thread and close the transport.

        ``timeout`` bounds the flush and the wait for the thread; a thread still running then
        is logged, and the transport is left open (the thread may still be using it).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
        result = self.flush(timeout)
        with self._lock:
            self._stop = True
            self._work.notify()
        self._abort.set()  # cut short a backoff sleep when the flush timed out
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.error("the sender thread did not stop within the timeout")
        else:
            self._transport.close()
        return result

    def undelivered(self) -> list[Event]:
        """The events held now (queued, in flight, or kept after failed retries)."""
        with self._lock:
            return [h.event for h in self._inflight.values()] + [h.event for h in self._queue]

    def stats(self) -> ClientStats:
        with self._lock:
            return ClientStats(
                tracked=self._tracked,
                delivered=self._delivered,
                rejected=self._rejected,
                retries=self._retries,
                failed_cycles=self._cycles,
                held=len(self._queue) + len(self._inflight),
            )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based): full jitter, at least ``retry_after``.

        ``rng() * min(backoff_cap_s, backoff_base_s * 2**attempt)``.
        """
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(attempt, 64))
        delay = self._rng() * ceiling
        return delay if retry_after is None else max(delay, retry_after)

    # -- under the lock ------------------------------------------------------------------

    def _settled_through(self, target: int) -> bool:
        # The queue is in ascending seq order, so its head is its oldest event.
        if self._queue and self._queue[0].seq <= target:
            return False
        return all(seq > target for seq in self._inflight)

    def _report(self, target: int, timed_out: bool) -> FlushResult:
        held = [*self._inflight.values(), *self._queue]
        result = FlushResult(
            delivered=self._unreported_delivered,
            rejected=tuple(self._unreported_rejected),
            failed=tuple(h.event.event_id for h in held if h.seq <= target),
            timed_out=timed_out,
        )
        self._unreported_delivered = 0
        self._unreported_rejected.clear()
        return result

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._deliver(batch)

    def _next_batch(self) -> list[_Held] | None:
        """Block until a batch is due (full, flushed, or its oldest event waited long enough)."""
        with self._lock:
            while not self._stop:
                now = time.monotonic()
                if self._paused_until is not None and now < self._paused_until:
                    self._work.wait(self._paused_until - now)
                    continue
                self._paused_until = None
                if not self._queue:
                    self._work.wait()
                    continue
                head = self._queue[0]
                due = head.queued_at + self.flush_interval_s
                if (
                    len(self._queue) >= self._batch_limit
                    or head.seq <= self._flush_through
                    or now >= due
                ):
                    size = min(self._batch_limit, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(size)]
                    self._inflight.update((h.seq, h) for h in batch)
                    return batch
                self._work.wait(due - now)
            return None

    def _deliver(self, batch: list[_Held]) -> None:
        """Send ``batch`` until every event in it is settled, or give up this cycle."""
        work: deque[list[_Held]] = deque([batch])
        failures = 0  # consecutive failed attempts; any answer resets it
        while work:
            part = work[0]
            verdict = self._send(part)
            if isinstance(verdict, Delivered):
                work.popleft()
                failures = 0
                self._settle(part, verdict.rejected)
            elif isinstance(verdict, Refused):
                work.popleft()
                failures = 0
                log.error(
                    "the destination refused %d events for good: %s (%s)",
                    len(part),
                    verdict.reason,
                    verdict.code,
                )
                self._settle(part, _each(part, batch_error(verdict.code, verdict.reason)))
            elif isinstance(verdict, TooLarge):
                work.popleft()
                if len(part) == 1:
                    self._settle(part, _each(part, batch_error("too_large", verdict.reason)))
                    continue
                half = len(part) // 2
                work.extendleft([part[half:], part[:half]])
                with self._lock:
                    self._batch_limit = min(self._batch_limit, half)
            else:
                if verdict.indexes is not None:
                    pending = set(verdict.indexes)
                    self._settle([h for i, h in enumerate(part) if i not in pending], {})
                    part = [h for i, h in enumerate(part) if i in pending]
                    if not part:
                        work.popleft()
                        continue
                    work[0] = part
                if failures >= self.max_retries:
                    self._requeue(work, gave_up=verdict.reason, attempts=failures + 1)
                    return
                delay = self.backoff_delay(failures, verdict.retry_after)
                failures += 1
                with self._lock:
                    self._retries += 1
                log.warning("retrying %d events in %.2f s: %s", len(part), delay, verdict.reason)
                self._sleep(delay)
                if self._abort.is_set():
                    self._requeue(work)
                    return

    def _send(self, part: list[_Held]) -> SendResult:
        try:
            return self._transport.send([h.event for h in part])
        except Exception as exc:  # a transport must not kill the sender: keep and retry
            log.exception("transport failed")
            return Retry(f"transport error: {exc!r}")

    def _settle(self, part: list[_Held], rejected: Mapping[int, Errors]) -> None:
        """Mark ``part`` delivered except the ``rejected`` indexes.

        ``on_rejected`` runs first, so a flush that sees these events settled also knows
        their callbacks have run.
        """
        refused = [
            RejectedEvent(part[i].event.event_id, errors, part[i].event)
            for i, errors in sorted(rejected.items())
        ]
        for rejection in refused:
            log.warning("event %s rejected: %s", rejection.event_id, ", ".join(rejection.codes))
            if self._on_rejected is not None:
                try:
                    self._on_rejected(rejection)
                except Exception:
                    log.exception("on_rejected failed for event %s", rejection.event_id)
        with self._lock:
            for held in part:
                del self._inflight[held.seq]
            self._delivered += len(part) - len(refused)
            self._unreported_delivered += len(part) - len(refused)
            self._rejected += len(refused)
            self._unreported_rejected.extend(refused)
            self._settled.notify_all()

    def _requeue(
        self, work: deque[list[_Held]], *, gave_up: str | None = None, attempts: int = 0
    ) -> None:
        """Put unsettled events back at the head of the queue; with ``gave_up``, end the cycle."""
        rest = [held for part in work for held in part]
        with self._lock:
            for held in rest:
                del self._inflight[held.seq]
            self._queue.extendleft(reversed(rest))
            if gave_up is not None:
                self._cycles += 1
                self._paused_until = time.monotonic() + self.backoff_cap_s
                self._flush_through = -1
            held_now = len(self._queue)
            self._settled.notify_all()
        if gave_up is not None:
            log.error(
                "gave up after %d attempts (%s); keeping %d events, trying again in %.0f s",
                attempts,
                gave_up,
                held_now,
                self.backoff_cap_s,
            )
