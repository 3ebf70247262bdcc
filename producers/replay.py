"""Send simulated arrivals to a target: the HTTP collector, Kafka, or the in-process pipeline.

Each function sends :class:`~producers.messiness.Arrival` payloads in arrival order and
returns a :class:`Sent` tally. Batches never mix user agents (a batch is one client's).
"""

from __future__ import annotations

import gzip
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from funnel.intake import take_batch
from producers.kafka_producer import EventProducer
from producers.messiness import Arrival
from stream_processors.embedded import EmbeddedPipeline

__all__ = ["Sent", "batches", "send_http", "send_inprocess", "send_kafka"]


@dataclass(slots=True)
class Sent:
    """What a target took: items accepted and rejected (by the collector or intake)."""

    accepted: int = 0
    rejected: int = 0


def batches(arrivals: list[Arrival], size: int = 50) -> Iterator[list[Arrival]]:
    """Consecutive arrivals grouped into batches of one user agent, at most ``size`` long."""
    batch: list[Arrival] = []
    for arrival in arrivals:
        if batch and (len(batch) >= size or arrival.user_agent != batch[0].user_agent):
            yield batch
            batch = []
        batch.append(arrival)
    if batch:
        yield batch


def send_http(
    arrivals: list[Arrival],
    endpoint: str,
    write_key: str,
    *,
    size: int = 50,
    retries: int = 8,
    progress: Callable[[int], None] | None = None,
) -> Sent:
    """POST batches to ``endpoint``/v1/batch (gzip); retry 503/429/network errors."""
    sent = Sent()
    url = endpoint.rstrip("/") + "/v1/batch"
    for batch in batches(arrivals, size):
        # A real client stamps sent_at with its own clock at sending: now, plus its skew.
        now = datetime.now(UTC)
        items = [
            {**a.payload, "sent_at": (now + a.skew).isoformat(timespec="milliseconds")}
            if "sent_at" in a.payload
            else a.payload
            for a in batch
        ]
        body = gzip.compress(json.dumps(items).encode())
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "X-Funnel-Key": write_key,
                "User-Agent": batch[0].user_agent,
            },
        )
        result = _post(request, retries)
        sent.accepted += int(result.get("accepted", 0))
        sent.rejected += len(result.get("rejected", []))
        if progress:
            progress(len(batch))
    return sent


def _post(request: urllib.request.Request, retries: int) -> dict[str, Any]:
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            if exc.code == 400:
                return dict(json.loads(exc.read()))
            if exc.code not in (429, 500, 502, 503, 504) or attempt == retries:
                raise
            delay = float(exc.headers.get("Retry-After", delay))
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError):
            # No answer: refused, reset, or closed mid-request (a collector that died): the
            # events may or may not be stored, and sending them again is safe (event ids).
            if attempt == retries:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def send_kafka(
    arrivals: list[Arrival],
    bootstrap_servers: str,
    topic: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> Sent:
    """Produce the payloads as they are (malformed ones included) to ``topic``."""
    with EventProducer(bootstrap_servers, topic) as producer:
        futures = []
        for arrival in arrivals:
            payload = arrival.payload
            who = payload.get("anonymous_id") or payload.get("customer_id") or ""
            key = f"{payload.get('site_id', '')}:{who}".encode()
            futures.append(producer.send_raw(key, json.dumps(payload).encode()))
            if progress:
                progress(1)
        for future in futures:  # raises if any record was not acknowledged
            future.get(timeout=producer.ack_timeout_s + 1)
    return Sent(accepted=len(arrivals))


def send_inprocess(
    arrivals: list[Arrival],
    pipeline: EmbeddedPipeline,
    site_id: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> Sent:
    """Validate and enrich like the collector, each item received at its arrival time; the
    items refused land in ``rejected_events`` with their reasons, as the collector's do
    (after the accepted events are flushed)."""
    sent = Sent()
    refused: list[dict[str, object]] = []
    for arrival in arrivals:
        result = take_batch(
            [arrival.payload],
            site_id=site_id,
            received_at=arrival.arrives_at,
            user_agent=arrival.user_agent,
        )
        pipeline.submit_all(result.accepted)
        refused.extend(r.row(arrival.arrives_at) for r in result.rejected)
        sent.accepted += len(result.accepted)
        sent.rejected += len(result.rejected)
        if progress:
            progress(1)
    pipeline.flush()
    if refused:
        pipeline.store.insert("rejected_events", refused)
    return sent
