"""The HTTP transport: batches to the collector's ``/v1/batch`` (``producers/collector``)."""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.message import Message
from typing import Any

from funnel.events import Event
from producers.sdk._transport import (
    Delivered,
    Errors,
    Refused,
    Retry,
    SendResult,
    TooLarge,
    batch_error,
    wall_clock,
)

__all__ = ["HttpTransport"]

log = logging.getLogger("producers.sdk")

_MAX_RETRY_AFTER_S = 600.0  # a broken Retry-After must not wedge the sender for days
_USER_AGENT = "funnel-sdk-python/0.1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST would lose its body (urllib turns it into a GET): fail loudly instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpTransport:
    """``POST {endpoint}/v1/batch``: gzip-compressed JSON, key in ``X-Funnel-Key``.

    Each attempt stamps ``sent_at`` so the collector can correct the sender's clock skew.
    Blocks for at most ``timeout_s`` per request (connect and each read).
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = wall_clock,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/v1/batch"
        self.timeout_s = timeout_s
        self._write_key = write_key
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())

    def send(self, events: Sequence[Event]) -> SendResult:
        sent_at = self._clock().isoformat()
        items = [
            {
                **e.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
                "sent_at": sent_at,
            }
            for e in events
        ]
        body = gzip.compress(json.dumps(items, separators=(",", ":")).encode(), compresslevel=6)
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "X-Funnel-Key": self._write_key,
                "User-Agent": _USER_AGENT,
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return _verdict(response.status, response.headers, response.read(), len(events))
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    answer = exc.read()
                except (OSError, http.client.HTTPException):
                    answer = b""
                return _verdict(exc.code, exc.headers, answer, len(events))
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            return Retry(f"network error: {exc}")

    def close(self) -> None:
        return None


def _verdict(status: int, headers: Message, body: bytes, n: int) -> SendResult:
    """Map a collector answer to a verdict (see ``producers/collector/app.py``)."""
    payload = _json_object(body)
    message = str(payload.get("message") or f"HTTP {status}")
    summary = f"HTTP {status}" if message == f"HTTP {status}" else f"HTTP {status}: {message}"
    if 200 <= status < 300:
        rejected = _rejections(payload, n)
        accepted = payload.get("accepted")
        if isinstance(accepted, int) and accepted + len(rejected) != n:
            log.warning(
                "collector answered %d accepted + %d rejected of %d", accepted, len(rejected), n
            )
        return Delivered(rejected)
    if status == 400 and isinstance(payload.get("rejected"), list):
        listed = _rejections(payload, n)
        whole = batch_error("rejected", "the batch was refused")
        return Delivered({i: listed.get(i, whole) for i in range(n)})
    if status == 413 or (status == 400 and payload.get("error") == "batch_too_long"):
        return TooLarge(message)
    if status in (401, 403):
        return Refused("unauthorized", message)
    if status in (408, 425, 429) or status >= 500:
        return Retry(summary, _retry_after(headers.get("Retry-After")))
    return Refused(str(payload.get("error") or f"http_{status}"), message)


def _json_object(body: bytes) -> dict[str, object]:
    try:
        payload = json.loads(body) if body else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _rejections(payload: Mapping[str, object], n: int) -> dict[int, Errors]:
    found: dict[int, Errors] = {}
    items = payload.get("rejected")
    for item in items if isinstance(items, list) else ():
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < n:
            continue
        errors = item.get("errors")
        found[index] = tuple(
            {str(k): str(v) for k, v in e.items()}
            for e in (errors if isinstance(errors, list) else ())
            if isinstance(e, dict)
        ) or batch_error("rejected", "rejected")
    return found


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    # The wall clock, not the injected one: the collector's date is a real one.
    return min(max(0.0, (when - wall_clock()).total_seconds()), _MAX_RETRY_AFTER_S)
