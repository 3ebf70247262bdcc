"""The collector's HTTP surface (Starlette/ASGI).

Routes:

* ``POST /v1/batch`` — a JSON array of events (``application/json`` or ``text/plain`` for
  ``sendBeacon``; ``Content-Encoding: gzip`` accepted).
* ``POST /v1/event`` — one event object.
* ``GET /v1/p.gif`` — a tracking pixel for impressions and clicks, fields in the query.
* ``GET /t.js`` — the tracker script, minified.
* ``GET /openapi.json``, ``GET /health``, ``GET /metrics``.
* With ``live`` (the process owns the embedded store): the report API and the live page,
  ``GET /``, ``GET /api/…`` (:mod:`storage.reports.api`, the page from :mod:`dashboards.live`).

The write key comes in the ``X-Funnel-Key`` header or the ``key`` query parameter and allows
exactly one site. Answers: 200 ``{"accepted": n, "rejected": [{"index", "errors"}]}`` when at
least one event was accepted (and durable), 400 when every item was rejected, 401 without a
valid key, 413 for a body over the limit, 415 for another content type, 503 with
``Retry-After`` when the destination cannot take events (nothing was acknowledged then).
"""

from __future__ import annotations

import asyncio
import gzip
import html
import itertools
import json
import logging
import time
import urllib.parse
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from funnel.events import CLICK_ID_PARAMS
from funnel.intake import IntakeLimits, IntakeResult, take_batch
from producers.collector.delivery import Delivery, Unavailable
from producers.collector.limits import Throttle, retry_after
from producers.collector.openapi import openapi_document
from producers.collector.settings import CollectorSettings
from producers.tracker import tracker_script
from storage.reports.api import LiveReports, ReadsBusy

__all__ = ["create_app"]

log = logging.getLogger(__name__)

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_PIXEL_TYPES = frozenset({"impression", "click"})
_CONTEXT_PARAMS = (
    "url",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    *CLICK_ID_PARAMS,
)
_NO_STORE = {"Cache-Control": "no-store"}
Endpoint = Callable[[Request], Awaitable[Response]]


class _Problem(Exception):
    """A whole-request error: status, machine-readable code, message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = headers or {}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": self.code, "message": self.message, **self.extra}
        return JSONResponse(
            body, status_code=self.status, headers={**(headers or {}), **self.headers}
        )


def _throttled(wait_s: float) -> _Problem:
    after = retry_after(wait_s)
    return _Problem(
        429,
        "rate_limited",
        "too many requests: retry after the seconds in Retry-After",
        {"Retry-After": after},
        retry_after=int(after),
    )


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "funnel_collector_events", "Events by outcome", ["outcome"], registry=registry
        )
        self.rejections = Counter(
            "funnel_collector_rejections",
            "Rejected events by reason",
            ["reason"],
            registry=registry,
        )
        self.requests = Counter(
            "funnel_collector_requests",
            "Requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "funnel_collector_dead_letter_failures",
            "Dead-letter writes that failed",
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "funnel_collector_ack_seconds",
            "Time until events were durable",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def create_app(
    settings: CollectorSettings,
    delivery: Delivery,
    *,
    live: LiveReports | None = None,
    registry: CollectorRegistry | None = None,
) -> ASGIApp:
    """The collector app, delivering accepted events to ``delivery``; with ``live``, also
    the report API and the live page of the store ``delivery`` commits to. Its metrics go
    to ``registry`` (a new one by default)."""
    registry = CollectorRegistry() if registry is None else registry
    metrics = _Metrics(registry)
    limits = IntakeLimits(
        max_batch=settings.max_batch, future_bound=timedelta(seconds=settings.future_bound_s)
    )
    script = tracker_script()
    script_gz = gzip.compress(script, 9)
    spec = json.dumps(openapi_document(settings)).encode()

    rates = settings.rate_limits
    if rates is not None:
        by_address = Throttle(rates.per_address, rates.table_size)
        by_key = Throttle(rates.per_key, rates.table_size)
        failures = Throttle(rates.failed_keys, rates.table_size)

    def admit(request: Request, key: str | None, valid: bool) -> None:
        """Count a request against its client address and its key: 429 once either is
        spent, or while the address is locked out for wrong keys. A wrong key presented
        counts against the address's failures (a missing one does not: nothing guessed)."""
        if rates is None:
            return
        address = client_ip(request) or "-"
        if (wait := failures.empty(address)) or (wait := by_address.take(address)):
            raise _throttled(wait)
        if not valid:
            if key:
                failures.take(address)
            return
        if key and (wait := by_key.take(key)):
            raise _throttled(wait)

    def authorise(request: Request) -> str:
        key = request.headers.get("x-funnel-key") or request.query_params.get("key")
        site = settings.site_for(key)
        admit(request, key, site is not None)
        if site is None:
            raise _Problem(401, "unauthorized", "a valid write key is required (X-Funnel-Key)")
        return site

    def client_ip(request: Request) -> str | None:
        if settings.trust_forwarded_for and (fwd := request.headers.get("x-forwarded-for")):
            return fwd.split(",")[0].strip()
        return request.client.host if request.client else None

    async def read_body(request: Request) -> bytes:
        kind = request.headers.get("content-type", "application/json")
        kind = kind.split(";")[0].strip().lower()  # media types are case-insensitive
        if kind not in ("application/json", "text/plain", ""):
            raise _Problem(415, "unsupported_media_type", "send application/json or text/plain")
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _Problem(413, "body_too_large", f"the body is over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Problem(413, "body_too_large", f"the body is over {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, limit + 1)
            except zlib.error as exc:
                raise _Problem(400, "bad_gzip", f"the body is not valid gzip: {exc}") from None
            if len(body) > limit or inflater.unconsumed_tail:
                raise _Problem(413, "body_too_large", f"the inflated body is over {limit} bytes")
            if not inflater.eof:
                raise _Problem(400, "bad_gzip", "the gzip body is truncated")
        elif encoding not in ("identity", ""):
            raise _Problem(415, "unsupported_encoding", "only gzip content encoding is accepted")
        return body

    def decode(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Problem(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise _Problem(
                400, "json_too_deep", "the body nests arrays or objects too deeply"
            ) from None

    async def handle(request: Request, route: str, items: list[Any], site: str) -> Response:
        """Take ``items`` (emptied once validated); answer once the accepted ones are durable.

        While a request waits for the destination (about as long as it took to get there,
        and many wait at once) it keeps nothing it no longer needs: the decoded JSON and the
        events, once serialised, would be walked by every garbage collection meanwhile (a
        third of the CPU with 32 requests in flight into Kafka).
        """
        received_at = datetime.now(UTC)
        if len(items) > settings.max_batch:
            raise _Problem(
                400,
                "batch_too_long",
                f"at most {settings.max_batch} events per batch",
                max_batch=settings.max_batch,
            )
        result: IntakeResult = take_batch(
            items,
            site_id=site,
            received_at=received_at,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
            limits=limits,
        )
        items.clear()
        if result.rejected:
            metrics.events.labels("rejected").inc(len(result.rejected))
            for rejection in result.rejected:
                metrics.rejections.labels(rejection.reason).inc()
            try:
                await delivery.dead_letter(result.rejected, received_at)
            except Exception:  # the rejection stands either way; count the lost record
                metrics.dead_letter_failures.inc(len(result.rejected))
                log.exception("dead-letter write failed for %d items", len(result.rejected))
        accepted = len(result.accepted)
        rejected = [r.to_dict() for r in result.rejected]
        if accepted:
            started = time.perf_counter()
            events, result.accepted = result.accepted, []
            ids = [event.event_id for event in events]
            delivered = delivery.deliver(events)  # the only reference left to the events
            del events
            receipt = await delivered
            metrics.ack_seconds.observe(time.perf_counter() - started)
            if receipt.refused:  # refused after validation: by the store, or the runtime
                extra = _later_refusals(rejected, ids, receipt.refused)
                rejected = sorted([*rejected, *extra], key=lambda r: int(str(r["index"])))
                accepted -= len(extra)
                metrics.events.labels("rejected").inc(len(extra))
                for error in receipt.refused.values():
                    metrics.rejections.labels(error["code"]).inc()
            metrics.events.labels("accepted").inc(accepted)
            if receipt.duplicates:
                metrics.events.labels("duplicate").inc(receipt.duplicates)
            if live is not None:  # the live rate counts what was stored, not re-sent copies
                live.record(accepted - receipt.duplicates)
        body = {"accepted": accepted, "rejected": rejected}
        status = 400 if rejected and not accepted else 200
        return JSONResponse(body, status_code=status, headers=_NO_STORE)

    def guarded(route: str, endpoint: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            try:
                response: Response = await endpoint(request)
            except _Problem as problem:
                response = problem.response(_NO_STORE)
            except ReadsBusy as exc:
                response = _Problem(503, "busy", str(exc)).response(
                    {"Retry-After": "1", **_NO_STORE}
                )
            except Unavailable as exc:
                log.warning("%s: destination unavailable: %s", route, str(exc))
                response = _Problem(
                    503,
                    "unavailable",
                    "events were not stored; retry later",
                ).response({"Retry-After": str(settings.retry_after_s), **_NO_STORE})
            except Exception:  # a bug: answered, logged and counted, never an unhandled crash
                log.exception("%s: unexpected error", route)
                response = _Problem(
                    500, "internal_error", "the request failed; it may not have been stored"
                ).response(_NO_STORE)
            metrics.requests.labels(route, str(response.status_code)).inc()
            return response

        return wrapper

    def host_check(request: Request) -> None:
        """The read side answers the allowed host names only (DNS rebinding)."""
        if not settings.host_allowed(request.headers.get("host")):
            raise _Problem(
                400,
                "host_not_allowed",
                "this host name is not allowed here (FUNNEL_ALLOWED_HOSTS)",
            )

    def read_checked(name: str, endpoint: Any) -> Any:
        """``endpoint`` for a valid read key of the right site only (401 without one, 403
        for another site's data); the live page asks for one with a login form. A key for
        one site reads that site without saying so."""

        async def checked(request: Request) -> Response:
            host_check(request)
            key = _read_key(request)
            sites = settings.read_sites(key)
            admit(request, key, sites is not None)
            if sites is None:
                if name == "page":
                    return _login_page(401, "")
                raise _Problem(401, "unauthorized", _READ_KEY_NEEDED)
            if "*" not in sites and name in _SITE_ROUTES:
                asked = request.query_params.get("site")
                if asked is None and len(sites) == 1:
                    request = _with_site(request, sites[0])
                elif asked not in sites:
                    raise _Problem(
                        403,
                        "forbidden",
                        "this read key does not read that site"
                        if asked
                        else "this read key reads several sites: say which (site=)",
                    )
            response: Response = await endpoint(request)
            return response

        return checked

    async def login(request: Request) -> Response:
        """The live page's login form posts a read key here; a valid one becomes a cookie
        (HttpOnly, SameSite=Strict) and the browser goes back to the page."""
        host_check(request)
        body = (await request.body())[:4096].decode("utf-8", "replace")
        key = urllib.parse.parse_qs(body).get("key", [""])[0].strip()
        valid = settings.read_sites(key) is not None
        admit(request, key, valid)
        if not valid:
            return _login_page(401, "That key is not valid.")
        secure = "; Secure" if request.url.scheme == "https" else ""
        cookie = (
            f"{READ_COOKIE}={urllib.parse.quote(key)}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={7 * 86400}{secure}"
        )
        return Response(
            status_code=303, headers={"Location": "/", "Set-Cookie": cookie, **_NO_STORE}
        )

    async def batch(request: Request) -> Response:
        site = authorise(request)
        items = decode(await read_body(request))
        if not isinstance(items, list):
            raise _Problem(400, "not_a_batch", "the body must be a JSON array of events")
        return await handle(request, "batch", items, site)

    async def single(request: Request) -> Response:
        site = authorise(request)
        item = decode(await read_body(request))
        if not isinstance(item, dict):
            raise _Problem(400, "not_an_event", "the body must be one JSON object")
        return await handle(request, "event", [item], site)

    async def pixel(request: Request) -> Response:
        site = authorise(request)
        q = request.query_params
        kind = q.get("type", "impression")
        if kind not in _PIXEL_TYPES:
            raise _Problem(400, "invalid_type", "the pixel records impressions and clicks only")
        context = {name: q[name] for name in _CONTEXT_PARAMS if q.get(name)}
        if referrer := request.headers.get("referer"):
            context.setdefault("referrer", referrer)
        item: dict[str, Any] = {
            "event_id": q.get("eid") or str(uuid.uuid4()),
            "type": kind,
            "anonymous_id": q.get("aid") or None,
            "customer_id": q.get("cid") or None,
            "occurred_at": q.get("ts") or datetime.now(UTC).isoformat(),
            "context": context,
        }
        response = await handle(request, "pixel", [item], site)
        if response.status_code != 200:
            return response
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    async def tracker(request: Request) -> Response:
        headers = {"Cache-Control": "public, max-age=3600", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(script_gz, media_type="application/javascript", headers=headers)
        return Response(script, media_type="application/javascript", headers=headers)

    async def openapi(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    async def health(request: Request) -> Response:
        problem = delivery.problem()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        """Every site's counts: for a read key of all sites (``*``) only; ``funnel serve
        --metrics-port`` serves them on a port of their own for a scraper instead."""
        key = _read_key(request)
        sites = settings.read_sites(key)
        admit(request, key, sites is not None)
        if sites is None:
            raise _Problem(401, "unauthorized", _READ_KEY_NEEDED)
        if "*" not in sites:
            raise _Problem(403, "forbidden", "metrics need a read key of every site (*)")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await delivery.start()
        try:
            yield
        finally:
            await delivery.close()
            if live is not None:
                await asyncio.to_thread(live.close)  # waits for a report being computed

    intake = {
        ("POST", "/v1/batch"): guarded("batch", batch),
        ("POST", "/v1/event"): guarded("event", single),
        ("GET", "/v1/p.gif"): guarded("pixel", pixel),
    }
    routes = [
        *(Route(path, endpoint, methods=[method]) for (method, path), endpoint in intake.items()),
        Route("/t.js", tracker, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", guarded("metrics", prometheus), methods=["GET"]),
        *(
            Route(
                r.path,
                guarded(r.name, read_checked(r.name, r.endpoint)),
                methods=["GET"],
                name=r.name,
            )
            for r in (live.routes() if live is not None else ())
        ),
        *([Route("/login", guarded("login", login), methods=["POST"])] if live is not None else []),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return CORSMiddleware(
        _Intake(app, intake),
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Content-Encoding", "X-Funnel-Key"],
        expose_headers=["Retry-After"],
        max_age=600,
    )


class _Intake:
    """The intake routes straight to their endpoints, everything else through ``app``.

    Starlette's error middlewares, router and endpoint wrapper cost more per request than
    the intake of a small tracker batch; the intake endpoints answer every error themselves
    (``guarded``), so a request for one of them skips those layers. The routes are also
    Starlette's, which answers other methods (405) and the rest of the app.
    """

    def __init__(self, app: Starlette, intake: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = _hardened(send)
            endpoint = self.intake.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


READ_COOKIE = "funnel_read"
_READ_KEY_NEEDED = "a read key is required (Authorization: Bearer <key>, FUNNEL_READ_KEYS)"
#: Routes whose answer is one site's data (the others: the page itself, the funnels'
#: configuration, the owner's identity).
_SITE_ROUTES = frozenset({"report", "live"})
_LOGIN_POLICY = "default-src 'none'; form-action 'self'; frame-ancestors 'none'"
_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>funnel: read key</title></head>
<body><h1>funnel</h1><p>This page needs a read key (FUNNEL_READ_KEYS, or the store
directory's <code>read-key</code> file of <code>funnel serve</code>).</p>
<form method="post" action="/login"><label>Read key
<input type="password" name="key" autocomplete="current-password" autofocus required></label>
<button type="submit">Open</button></form><p>{error}</p></body></html>
"""


def _read_key(request: Request) -> str | None:
    """The read key of a request: ``Authorization: Bearer <key>``, else the login cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie = request.cookies.get(READ_COOKIE)
    return urllib.parse.unquote(cookie) if cookie else None


def _with_site(request: Request, site: str) -> Request:
    """``request`` asking for ``site`` (a one-site key's requests read their site)."""
    scope = dict(request.scope)
    query = [*request.query_params.multi_items(), ("site", site)]
    scope["query_string"] = urllib.parse.urlencode(query).encode()
    return Request(scope, request.receive)


def _login_page(status: int, error: str) -> Response:
    headers = {**_NO_STORE, "Content-Security-Policy": _LOGIN_POLICY}
    body = _LOGIN.format(error=html.escape(error))
    return Response(
        body, status_code=status, media_type="text/html; charset=utf-8", headers=headers
    )


#: Headers every response carries: no content sniffing, no referrer sent on.
_HARDENING = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))


def _hardened(send: Send) -> Send:
    """``send`` that adds :data:`_HARDENING` to the response's headers."""

    async def hardened(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_HARDENING]}
        await send(message)

    return hardened


def _later_refusals(
    rejected: list[dict[str, object]], ids: list[str], refused: dict[str, dict[str, str]]
) -> list[dict[str, object]]:
    """An entry for each accepted item whose event was refused after validation (by the
    store, or the runtime raised on it), by its index in the request (the accepted items are
    those not in ``rejected``, in order, with ``ids``)."""
    taken = {int(str(r["index"])) for r in rejected}
    indices = (i for i in itertools.count() if i not in taken)
    return [
        {"index": index, "errors": [refused[event_id]]}
        for index, event_id in zip(indices, ids, strict=False)
        if event_id in refused
    ]
