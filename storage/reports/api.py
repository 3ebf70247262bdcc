"""The report HTTP API of the process that owns the embedded store (and its live page).

Mounted by :func:`producers.collector.app.create_app` when ``funnel serve`` processes events
into its own chDB store (chDB lets one process open a store, DESIGN §11: this process answers
reports for everyone else):

* ``GET /`` — the live page, when one is given (:mod:`dashboards.live`; it polls this API).
* ``GET /api/reports/<name>?from=&to=&site=&by=&<option>=&format=`` — what
  ``funnel report <name> --format F`` prints (:mod:`storage.reports.catalog`, rendered by
  :mod:`storage.reports.render`): ``format`` is ``json`` (the default), ``csv`` or ``table``.
  400 with ``{"error", "message"}`` for a request no report can answer.
* ``GET /api/live?site=`` — accepted events per second (in-process, :class:`EventRate`), the
  events stored, and ``version``: the number of commits so far (a report changes only when it
  does).
* ``GET /api/funnels`` — the configured funnels and their steps; ``GET /api/owner`` — pid and
  database (how ``funnel report`` tells a live owner from a stale ``owner.json``).

Reads see committed data only: commits (:class:`~stream_processors.embedded.GatedPipeline`)
and reads take turns on one :class:`~storage.gate.CommitGate`, so a report never sees half a
commit. Reads run on one worker thread of their own, never on the event loop, and never take
the threads the committer needs; a report is computed once per commit and served from a cache
until the next one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from funnel.funnels import FunnelCatalog
from storage.backends import Store
from storage.gate import CommitGate
from storage.reports.catalog import (
    ReportRequest,
    ReportRequestError,
    compute,
    parse_request,
)
from storage.reports.owner import PID_HEADER
from storage.reports.render import FORMATS, MEDIA_TYPES, render

__all__ = ["MAX_READS", "READ_TIMEOUT_S", "EventRate", "LiveReports", "ReadsBusy"]

MAX_READS = 8
"""Reads queued or running at once; more are refused (503) at once, not queued."""
READ_TIMEOUT_S = 30.0
"""How long a request waits for its read (a commit goes before any read)."""


class ReadsBusy(Exception):
    """The read side is full or slow: answered 503 with ``Retry-After``."""


T = TypeVar("T")
_NO_STORE = {"Cache-Control": "no-store"}
_CACHED_REPORTS = 64
#: Reports whose answer depends on "now" (open leads' age, churn as of today): cached per
#: ``_AS_OF_NOW_TTL_S`` as well as per commit.
_AS_OF_NOW = frozenset({"forecast", "cohorts", "leads"})
_AS_OF_NOW_TTL_S = 60


class EventRate:
    """Accepted events per second: one-second buckets over the last ``window_s`` seconds.

    ``clock`` is a monotonic time in seconds (injected so tests control it). Thread-safe.
    """

    def __init__(self, window_s: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._buckets: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self.total = 0

    def add(self, n: int) -> None:
        second = int(self._clock())
        with self._lock:
            self.total += n
            self._buckets[second] = self._buckets.get(second, 0) + n
            self._prune(second)

    def _prune(self, now: int) -> None:
        while self._buckets and next(iter(self._buckets)) <= now - self.window_s:
            self._buckets.popitem(last=False)

    def snapshot(self, *, rate_over_s: int = 60, step_s: int = 10) -> dict[str, object]:
        """``total``; ``per_second``: the mean rate over the last ``rate_over_s`` seconds (or
        since start, if shorter); ``series``: the mean rate per ``step_s`` seconds over the
        window, oldest first, the last one ending now."""
        now_f = self._clock()
        now = int(now_f)
        with self._lock:
            self._prune(now)
            buckets = dict(self._buckets)
            total = self.total
        span = max(1.0, min(float(rate_over_s), now_f - self._started))
        recent = sum(n for s, n in buckets.items() if s > now - rate_over_s)
        series = [
            sum(buckets.get(now - i, 0) for i in range(end - step_s, end)) / step_s
            for end in range(self.window_s, 0, -step_s)
        ]
        return {
            "total": total,
            "per_second": recent / span,
            "series": series,
            "series_step_s": step_s,
        }


class LiveReports:
    """The report API, the live page (``page``: its HTML, none without) and the event rate of
    one store (see the module doc)."""

    def __init__(
        self,
        store: Store,
        funnels: FunnelCatalog,
        gate: CommitGate,
        *,
        rate: EventRate | None = None,
        page: bytes | None = None,
    ) -> None:
        self.store = store
        self.funnels = funnels
        self.gate = gate
        self.rate = rate or EventRate()
        self.pid = os.getpid()
        # One thread: reads are serialised by the store anyway, and queue here instead of
        # taking the default pool's threads from the committer.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funnel-reports")
        self._reads = 0  # queued or running on the reader (changed on the event loop only)
        self._cache: OrderedDict[tuple[object, ...], tuple[int, str]] = OrderedDict()
        self._page = page
        self._policy = page_policy(page) if page else ""

    def record(self, accepted: int) -> None:
        """Count events the collector accepted (and the store committed)."""
        self.rate.add(accepted)

    def close(self) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)

    def routes(self) -> list[Route]:
        """The read side's routes, named (the collector counts requests by route name)."""
        page = [Route("/", self._page_route, methods=["GET"], name="page")] if self._page else []
        return [
            *page,
            Route("/api/reports/{name}", self._report_route, methods=["GET"], name="report"),
            Route("/api/live", self._live_route, methods=["GET"], name="live"),
            Route("/api/funnels", self._funnels_route, methods=["GET"], name="funnels"),
            Route("/api/owner", self._owner_route, methods=["GET"], name="owner"),
        ]

    async def _read(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the reader thread; :class:`ReadsBusy` when :data:`MAX_READS` are
        queued or running already, or when it takes over :data:`READ_TIMEOUT_S` (it still
        finishes, and counts until it does: the bound holds)."""
        if self._reads >= MAX_READS:
            raise ReadsBusy("too many reports are being computed: retry in a moment")
        self._reads += 1
        future = asyncio.get_running_loop().run_in_executor(self._reader, work)
        future.add_done_callback(self._read_done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), READ_TIMEOUT_S)
        except TimeoutError:
            raise ReadsBusy(f"the report took over {READ_TIMEOUT_S:.0f} s: retry later") from None

    def _read_done(self, _: object) -> None:
        self._reads -= 1

    @property
    def _headers(self) -> dict[str, str]:
        return {**_NO_STORE, PID_HEADER: str(self.pid)}

    async def _page_route(self, request: Request) -> Response:
        assert self._page is not None  # routed only with a page
        headers = {**_NO_STORE, "Content-Security-Policy": self._policy}
        return Response(self._page, media_type="text/html; charset=utf-8", headers=headers)

    async def _report_route(self, request: Request) -> Response:
        name = request.path_params["name"]
        params = dict(request.query_params)
        fmt = params.pop("format", "json")
        try:
            if fmt not in FORMATS:
                choices = ", ".join(FORMATS)
                raise ReportRequestError(f"unknown format {fmt!r}: one of {choices}")
            report = parse_request(name, params)
            version, text = await self._read(lambda: self._report(report, fmt))
        except ReportRequestError as exc:
            body = {"error": "bad_report_request", "message": str(exc)}
            return JSONResponse(body, status_code=400, headers=self._headers)
        headers = {**self._headers, "X-Funnel-Version": str(version)}
        return Response(text, media_type=MEDIA_TYPES[fmt], headers=headers)

    def _report(self, report: ReportRequest, fmt: str) -> tuple[int, str]:
        key: tuple[object, ...] = (report.name, fmt, tuple(sorted(report.params.items())))
        if report.name in _AS_OF_NOW:
            # Their answer moves with the clock (open leads age, churn), not only with commits.
            key += (int(time.time() // _AS_OF_NOW_TTL_S),)
        with self.gate.read() as version:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached
            answer = (version, render(compute(self.store, report, self.funnels), fmt))
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHED_REPORTS:
            self._cache.popitem(last=False)
        return answer

    async def _live_route(self, request: Request) -> Response:
        site = request.query_params.get("site") or ""
        version, stored = await self._read(lambda: self._stored(site))
        body = {
            "version": version,
            "accepted": self.rate.snapshot(),
            "stored_events": stored,
        }
        return JSONResponse(body, headers=self._headers)

    def _stored(self, site: str) -> tuple[int, int]:
        sql = (
            f"SELECT count() AS n FROM {self.store.database}.events "
            "WHERE {site:String} = '' OR site_id = {site:String}"
        )
        with self.gate.read() as version:
            [row] = self.store.query(sql, {"site": site})
        return version, int(row["n"])

    async def _funnels_route(self, request: Request) -> Response:
        body = [
            {"name": spec.name, "steps": [step.name for step in spec.steps]}
            for spec in self.funnels.specs
        ]
        return JSONResponse(body, headers=self._headers)

    async def _owner_route(self, request: Request) -> Response:
        body = {"pid": self.pid, "database": self.store.database, "version": self.gate.version}
        return JSONResponse(body, headers=self._headers)


def page_policy(html: bytes) -> str:
    """The live page's Content-Security-Policy: nothing loads from elsewhere, and only the
    page's own inline script and style run (allowed by their SHA-256), so text that reached
    the page from the store could not run even if it escaped its escaping."""
    text = html.decode("utf-8")

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in found
        )

    return (
        f"default-src 'none'; script-src {hashes('script') or chr(39) + 'none' + chr(39)}; "
        f"style-src {hashes('style') or chr(39) + 'none' + chr(39)}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
