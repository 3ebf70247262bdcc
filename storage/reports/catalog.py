"""Every report by name, asked for with string parameters.

The one place that turns a request (``funnel report <name> --opt …`` or
``GET /api/reports/<name>?opt=…``) into a report, so the command and the HTTP API of the
process that owns the embedded store answer the same:

* :data:`REPORTS` — what each report takes (:class:`ReportSpec`): its own options, the
  breakdowns it answers, and which of the scope parameters (``from``, ``to``, ``site``, ``by``,
  ``include_bots``) apply to it. Anything else is refused, never ignored.
* :func:`parse_request` — a name and string parameters into a validated
  :class:`ReportRequest`; raises :class:`ReportRequestError` for anything wrong (an unknown
  report, option or value, a breakdown or model the report cannot answer), with the choices.
* :func:`compute` — run a request against a store: a :class:`~funnel.report.Table`, or for
  ``funnel`` a list of :class:`~funnel.report.FunnelReport` (one per breakdown value), its
  numbers in the output precision (:mod:`funnel.report`). A site with no stored events is
  refused (with the sites that have some), not answered with zeros.

Its results are rendered (JSON, CSV, tables) by :mod:`storage.reports.render`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from funnel.attribution import MODELS
from funnel.funnels import FunnelCatalog, FunnelSpec
from funnel.report import DropoffRow, Table
from storage.backends import Store
from storage.reports.attribution import ATTRIBUTION_MODELS, DATA_DRIVEN
from storage.reports.compare import COMPARISONS, compared, earlier, funnel_table, label
from storage.reports.paths import SHOWS
from storage.reports.people import STATUSES, TEMPERATURES
from storage.reports.query import (
    TOUCH_BREAKDOWNS,
    Condition,
    FunnelQuery,
    QueryError,
    is_touch_breakdown,
    parse_conditions,
    parse_mode,
    parse_steps,
    parse_window,
)
from storage.reports.render import ReportResult
from storage.reports.scope import ALL_BREAKDOWNS, BREAKDOWNS, ReportScope, parse_when

__all__ = [
    "ATTRIBUTION_MODELS",
    "CONVERSIONS",
    "REPORTS",
    "ReportRequest",
    "ReportRequestError",
    "ReportResult",
    "ReportSpec",
    "compute",
    "parse_request",
]

#: The conversion types the stream credits (``CoreConfig.conversions``, DESIGN §7).
CONVERSIONS = ("lead", "order", "payment", "repeat")
_SCOPE = ("from", "to", "site", "by", "include_bots")
_PERIODS = ("day", "week", "month")
_TOUCHES = ("channel", "campaign")


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """What a report takes. Values are strings, as on a command line or in a query string."""

    options: Mapping[str, str | None]
    """Its own options and their defaults (``None``: unset)."""
    breakdowns: tuple[str, ...] = BREAKDOWNS
    """The ``by`` values it answers (none: it takes no ``by``)."""
    default_by: str | None = None
    scope: tuple[str, ...] = _SCOPE
    """The scope parameters that apply to it."""

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every parameter it takes: the scope's that apply, then its own options."""
        scope = tuple(p for p in self.scope if p != "by" or self.breakdowns)
        return scope + tuple(self.options)


_FUNNEL = {"funnel": "sales"}
#: A funnel asked at query time (:mod:`storage.reports.query`): its steps instead of a
#: configured funnel's name, or a configured funnel with another window or mode; ``where``
#: narrows the entries.
_QUERY = {"steps": None, "window": None, "mode": None, "where": None}
#: Breakdown by any event property: ``property:NAME``.
PROPERTY_BREAKDOWN = "property:NAME"
_FUNNEL_BREAKDOWNS = (*ALL_BREAKDOWNS, PROPERTY_BREAKDOWN)
#: Every report by name. Breakdowns are what each report's code answers: funnel counts and
#: drop-off answer every one, touch fields too; time to convert, attribution and leads
#: answer the others; channels break down by
#: touch or period (a person-level value has no spend); cohorts are periods (of the cohort's
#: start); the forecast is one answer as of ``to`` (no period start, no breakdown); ``sites``
#: lists what the store holds.
REPORTS: dict[str, ReportSpec] = {
    "funnel": ReportSpec(
        {**_FUNNEL, **_QUERY, "split": "true", "compare": None}, _FUNNEL_BREAKDOWNS
    ),
    "dropoff": ReportSpec({**_FUNNEL, **_QUERY, "compare": None}, _FUNNEL_BREAKDOWNS),
    "time-to-convert": ReportSpec({**_FUNNEL, "where": None}, _FUNNEL_BREAKDOWNS),
    "attribution": ReportSpec({"conversion": "payment", "lookback_days": "30", "models": None}),
    "channels": ReportSpec(
        {"model": "last_non_direct", "target_cpl": None, "compare": None, "where": None},
        breakdowns=(*_TOUCHES, *_PERIODS, *TOUCH_BREAKDOWNS, PROPERTY_BREAKDOWN),
    ),
    "cohorts": ReportSpec(
        {"cohort": "first_touch", "churn_days": "90"}, breakdowns=_PERIODS, default_by="month"
    ),
    "leads": ReportSpec({}),
    "forecast": ReportSpec(
        {"horizon_days": "30"}, breakdowns=(), scope=("to", "site", "include_bots")
    ),
    "people": ReportSpec(
        {**_FUNNEL, **_QUERY, "step": "1", "status": None, "temperature": None, "limit": "10000"},
        breakdowns=(),
        scope=("from", "to", "site", "include_bots"),
    ),
    "paths": ReportSpec(
        {"conversion": "payment", "lookback_days": "30", "show": "paths", "top": "20"},
        breakdowns=(*_PERIODS, "temperature", "manager"),
    ),
    "sites": ReportSpec({}, breakdowns=(), scope=()),
}
#: The longest span a report option may give in days (lookback, churn, horizon): ten years.
_MAX_DAYS = 3650
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ReportRequestError(ValueError):
    """A request no report can answer: an unknown report, option, funnel, site or a bad value.

    ``option`` names the parameter at fault when one is (``lookback_days``), for a command
    line to name its flag.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """A validated request: the report's name, its scope, and its options (defaults filled)."""

    name: str
    scope: ReportScope
    options: Mapping[str, str | None]
    params: Mapping[str, str]
    """The parameters as given (no defaults): what to send to another process."""

    def text(self, option: str) -> str:
        value = self.options[option]
        if value is None:
            raise ReportRequestError(f"{option} is required", option=option)
        return value

    def number(
        self,
        option: str,
        kind: Callable[[str], int | float] = int,
        *,
        low: float = 0,
        high: float = _MAX_DAYS,
    ) -> int | float:
        """``option`` as a number from ``low`` to ``high``."""
        try:
            value = kind(self.text(option))
        except ValueError:
            raise ReportRequestError(
                f"{option} must be a number, not {self.options[option]!r}", option=option
            ) from None
        if not low <= value <= high:  # also refuses NaN
            raise ReportRequestError(
                f"{option} must be from {low:g} to {high:g}, not {value}", option=option
            )
        return value


def parse_request(name: str, params: Mapping[str, str | None]) -> ReportRequest:
    """Validate ``params`` (``None`` values are left out) for report ``name``.

    Numbers, flags, breakdowns, models and conversion types are checked here, so a bad
    request fails before any store is opened.
    """
    if name not in REPORTS:
        raise ReportRequestError(f"unknown report {name!r}: one of {', '.join(REPORTS)}")
    spec = REPORTS[name]
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(spec.parameters))
    if unknown:
        takes = ", ".join(spec.parameters) or "no parameters"
        raise ReportRequestError(
            f"the {name} report takes no {', '.join(unknown)} (it takes {takes})",
            option=unknown[0],
        )
    by = given.get("by") or spec.default_by
    if by is not None and not _breaks_down(spec, by):
        what = "unknown breakdown" if by not in ALL_BREAKDOWNS else "breakdown"
        raise ReportRequestError(
            f"{what} {by!r}: the {name} report breaks down by {', '.join(spec.breakdowns)}",
            option="by",
        )
    options = {**spec.options, **{k: given[k] for k in spec.options if k in given}}
    include_bots = "include_bots" in given and _flag(given, "include_bots")
    try:
        scope = ReportScope(
            start=parse_when(given["from"]) if given.get("from") else None,
            end=parse_when(given["to"], end=True) if given.get("to") else None,
            site=given.get("site") or None,
            by=by,
            include_bots=include_bots,
        )
    except ValueError as exc:
        raise ReportRequestError(str(exc)) from exc
    request = ReportRequest(name, scope, options, dict(given))
    for option in ("lookback_days", "churn_days", "horizon_days"):
        if option in spec.options:
            request.number(option, low=1)
    if "target_cpl" in spec.options and request.options["target_cpl"] is not None:
        request.number("target_cpl", float, high=1e15)
    if "split" in spec.options:
        _flag(request.options, "split")
    if "model" in spec.options:
        _model(request.text("model"))
    if "conversion" in spec.options:
        _one_of(request, "conversion", CONVERSIONS, "conversion type")
    if "cohort" in spec.options:
        _one_of(request, "cohort", ("first_touch", "first_payment"), "cohort")
    if "compare" in spec.options and request.options["compare"] is not None:
        _one_of(request, "compare", COMPARISONS, "comparison")
        if scope.by in _PERIODS:
            raise ReportRequestError(
                f"--compare goes with no period breakdown: by {scope.by}, the rows are the "
                "periods already",
                option="compare",
            )
        try:
            earlier(scope, request.text("compare"))
        except ValueError as exc:
            raise ReportRequestError(str(exc), option="compare") from exc
    if "show" in spec.options:
        _one_of(request, "show", SHOWS, "view")
        request.number("top", low=1, high=1000)
    if "status" in spec.options:
        request.number("step", low=1, high=20)
        request.number("limit", low=1, high=1_000_000)
        for option, choices in (("status", STATUSES), ("temperature", TEMPERATURES)):
            if request.options[option] is not None:
                _one_of(request, option, choices, option)
    if "steps" in spec.options and "steps" in given and "funnel" in given:
        raise ReportRequestError("give a configured --funnel or --steps, not both", option="steps")
    if "steps" in spec.options:
        _query_of(request, None)  # validated before any store is opened
    elif "where" in spec.options:
        _where(request)
    return request


def _where(request: ReportRequest) -> tuple[Condition, ...]:
    """The conditions of a ``where`` option (none when unset)."""
    text = request.options.get("where")
    try:
        return parse_conditions(text) if text is not None else ()
    except QueryError as exc:
        raise ReportRequestError(str(exc), option="where") from exc


def _breaks_down(spec: ReportSpec, by: str) -> bool:
    if by in spec.breakdowns:
        return True
    return (
        PROPERTY_BREAKDOWN in spec.breakdowns
        and by.startswith("property:")
        and is_touch_breakdown(by)
    )


def _query_of(request: ReportRequest, funnels: FunnelCatalog | None) -> FunnelQuery | None:
    """The funnel a funnel or drop-off request asks at query time; ``None`` for the
    configured one as it is. Without ``funnels`` it only validates (and answers ``None``)."""
    o = request.options
    if all(o[option] is None for option in _QUERY):
        return None
    query: FunnelQuery | None = None
    option = "steps"
    try:
        if o["steps"] is not None:
            query = parse_steps(o["steps"], window=o["window"], mode=o["mode"])
        else:
            option = "window"
            window = parse_window(o["window"]) if o["window"] is not None else None
            option = "mode"
            mode = parse_mode(o["mode"]) if o["mode"] is not None else None
            if funnels is not None:
                query = FunnelQuery.of(_spec(request, funnels)).adjusted(
                    window_ms=window, mode=mode
                )
    except QueryError as exc:
        raise ReportRequestError(str(exc), option=option) from exc
    where = _where(request)
    return None if query is None else query.adjusted(where=where)


def _models(text: str | None) -> tuple[str, ...] | None:
    """The attribution models a comma-separated list names, in its order (None: every one)."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in ATTRIBUTION_MODELS]
    if unknown or not names:
        raise ReportRequestError(
            f"unknown model {', '.join(map(repr, unknown)) or repr(text)}: a comma-separated "
            f"list of {', '.join(ATTRIBUTION_MODELS)}",
            option="models",
        )
    return names


def _flag(values: Mapping[str, str | None], option: str) -> bool:
    value = (values[option] or "").lower()
    if value not in _BOOLS:
        raise ReportRequestError(f"{option} is true or false, not {value!r}", option=option)
    return _BOOLS[value]


def _one_of(request: ReportRequest, option: str, choices: tuple[str, ...], what: str) -> None:
    value = request.text(option)
    if value not in choices:
        raise ReportRequestError(
            f"unknown {what} {value!r}: one of {', '.join(choices)}", option=option
        )


def _model(model: str) -> None:
    """The channels report reads the rule-based models the stream credited; the data-driven
    ones exist only at query time, in the attribution report."""
    if model in DATA_DRIVEN:
        raise ReportRequestError(
            f"the channels report has the models credited in the stream "
            f"({', '.join(MODELS)}); {model} is data-driven, computed at query time: see its "
            f"column in `funnel report attribution` (or /api/reports/attribution)",
            option="model",
        )
    if model not in MODELS:
        raise ReportRequestError(
            f"unknown model {model!r}: one of {', '.join(MODELS)} "
            f"({', '.join(DATA_DRIVEN)}: in the attribution report)",
            option="model",
        )


def _spec(request: ReportRequest, funnels: FunnelCatalog) -> FunnelSpec:
    try:
        return funnels.get(request.text("funnel"))
    except KeyError as exc:
        raise ReportRequestError(str(exc.args[0]), option="funnel") from exc


def _funnel(request: ReportRequest, funnels: FunnelCatalog) -> FunnelSpec | FunnelQuery:
    """The funnel of a funnel or drop-off request: asked at query time, or configured."""
    return _query_of(request, funnels) or _spec(request, funnels)


def compute(store: Store, request: ReportRequest, funnels: FunnelCatalog) -> ReportResult:
    """Run ``request`` against ``store`` (blocks for the report's queries); the result in
    the output precision (``canonical()``).

    Raises :class:`ReportRequestError` for a funnel that is not configured, a site with no
    stored events, or an option a report refuses (its ``ValueError``); store errors pass
    through.
    """
    site = request.scope.site
    if site is not None:
        _known_site(store, site)
    result = _run(store, request, funnels)
    if isinstance(result, Table):
        return result.canonical()
    return [r.canonical() for r in result]


def _known_site(store: Store, site: str) -> None:
    """Refuse a site with no stored events: its report would be all zeros, as a typo's is."""
    from storage.reports.sites import has_site, site_ids

    if not has_site(store, site):
        known = ", ".join(site_ids(store)) or "none yet"
        raise ReportRequestError(f"no data for site {site!r} (sites: {known})", option="site")


#: The columns that name a row of a compared report (its other columns are figures).
_ROW_KEYS = {"funnel": ("step",), "dropoff": ("step", "next_step")}


def _run(store: Store, request: ReportRequest, funnels: FunnelCatalog) -> ReportResult:
    how = request.options.get("compare")
    if how is None:
        return _run_one(store, request, funnels)
    scope = request.scope
    before = replace(request, scope=earlier(scope, how))
    grouped = scope.by is not None
    now, then = (_as_table(_run_one(store, r, funnels), grouped) for r in (request, before))
    keys = _ROW_KEYS.get(request.name) or (
        ("campaign",) if "campaign" in now.columns else ("channel",)
    )
    return compared(
        now,
        then,
        keys=(("group",) if "group" in now.columns else ()) + keys,
        labels=("current", "previous" if how == "previous" else "year_ago"),
        periods=(label(scope), label(before.scope)),
    )


def _as_table(result: ReportResult, grouped: bool) -> Table:
    return result if isinstance(result, Table) else funnel_table(result, grouped=grouped)


def _run_one(store: Store, request: ReportRequest, funnels: FunnelCatalog) -> ReportResult:
    # Imported here: each report module pulls in its own SQL, only the one asked for loads.
    from storage.reports.attribution import attribution_report
    from storage.reports.channels import channels_report
    from storage.reports.customers import cohorts_report, forecast_report, leads_report
    from storage.reports.funnels import dropoff_report, funnel_report
    from storage.reports.paths import paths_report
    from storage.reports.people import people_report
    from storage.reports.sites import sites_report
    from storage.reports.timing import time_to_convert_report

    r, scope = request, request.scope
    try:
        match r.name:
            case "funnel":
                split = _flag(r.options, "split")
                return funnel_report(store, _funnel(r, funnels), scope, split=split)
            case "dropoff":
                funnel = _funnel(r, funnels)
                rows = dropoff_report(store, funnel, scope)
                return dropoff_table(funnel.name, rows, grouped=scope.by is not None)
            case "time-to-convert":
                where = _where(r)
                return time_to_convert_report(store, _spec(r, funnels), scope, where=where)
            case "attribution":
                return attribution_report(
                    store,
                    scope,
                    conversion=r.text("conversion"),
                    lookback=timedelta(days=r.number("lookback_days")),
                    models=_models(r.options["models"]),
                )
            case "channels":
                target = r.options["target_cpl"]
                return channels_report(
                    store,
                    scope,
                    model=r.text("model"),
                    target_cpl=None if target is None else float(target),
                    where=_where(r),
                )
            case "cohorts":
                return cohorts_report(
                    store,
                    scope,
                    cohort=r.text("cohort"),
                    churn_days=int(r.number("churn_days")),
                )
            case "leads":
                return leads_report(store, scope)
            case "paths":
                return paths_report(
                    store,
                    scope,
                    conversion=r.text("conversion"),
                    lookback=timedelta(days=r.number("lookback_days")),
                    show=r.text("show"),
                    top=int(r.number("top", low=1, high=1000)),
                )
            case "people":
                return people_report(
                    store,
                    _funnel(r, funnels),
                    scope,
                    step=int(r.number("step", low=1, high=20)),
                    status=r.options["status"],
                    temperature=r.options["temperature"],
                    limit=int(r.number("limit", low=1, high=1_000_000)),
                )
            case "forecast":
                return forecast_report(store, scope, horizon_days=int(r.number("horizon_days")))
            case _:
                return sites_report(store, funnels)
    except ReportRequestError:
        raise
    except ValueError as exc:  # a report's own refusal (a breakdown or option it cannot do)
        raise ReportRequestError(str(exc)) from exc


def dropoff_table(funnel: str, rows: list[DropoffRow], *, grouped: bool) -> Table:
    """The drop-off rows of a funnel as a table (a ``group`` column with a breakdown)."""
    columns = (
        "step",
        "next_step",
        "reached",
        "continued",
        "dropped",
        "in_window",
        "dropoff_rate",
        "biggest_leak",
    )
    return Table(
        title=f"Drop-off ({funnel})",
        columns=(("group",) if grouped else ()) + columns,
        rows=tuple(
            ((r.group,) if grouped else ())
            + (
                r.step,
                r.next_step,
                r.reached,
                r.continued,
                r.dropped,
                r.in_window,
                None if r.dropoff_rate is None else round(r.dropoff_rate, 4),
                r.biggest_leak,
            )
            for r in rows
        ),
        meta={"funnel": funnel},
    )
