"""What Grafana and the ClickHouse plugin do to a panel's SQL before ClickHouse runs it.

Grafana is not installable here, so the tests run every panel's query through this module
and then on chDB. It follows the steps of ``grafana-clickhouse-datasource`` (v4) in order:

1. ``$__conditionalAll(condition, $var)`` (the plugin's frontend): the condition becomes
   ``1=1`` when ``var`` has *All* selected, and stays as written otherwise;
2. template variables (Grafana's ``templateSrv.replace``): ``$name``, ``${name}`` and
   ``${name:format}``; a multi-value variable without a format is written as the plugin's
   default, ``'a','b'``; ``singlequote`` quotes each value and escapes ``'`` as ``\\'``;
   a name that is not a variable is left as it is (like Grafana does);
3. the plugin's backend macros (``pkg/macros/macros.go``): ``$__timeFilter(col)`` is
   ``col >= toDateTime(<from s>) AND col <= toDateTime(<to s>)``, ``$__timeFilter_ms(col)``
   the same with ``fromUnixTimestamp64Milli(<ms>)``, ``$__dateFilter(col)`` with
   ``toDate('YYYY-MM-DD')``, ``$__dateTimeFilter(date, time)`` (alias ``$__dt``) both,
   ``$__fromTime`` / ``$__toTime`` (``toDateTime(<s>)``) and their ``_ms`` forms,
   ``$__timeInterval(col)`` is ``toStartOfInterval(toDateTime(col), INTERVAL <s> second)``
   (the panel's interval, at least 1 s), ``$__timeInterval_ms(col)`` and ``$__interval_s``.
   An unknown ``$__macro`` raises :class:`ValueError`, as the plugin fails the query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["QueryContext", "conditional_all", "expand_macros", "interpolate", "render"]

# Grafana's variable syntax: $name, [[name:format]], ${name.fieldPath:format}
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
_MACRO = re.compile(r"\$__(\w+)")
_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


@dataclass(frozen=True, slots=True)
class QueryContext:
    """The dashboard state a query runs in: time range, panel interval, variable values.

    A variable with *All* selected is named in ``all_selected`` and its value is every one
    of its options (Grafana writes all of them when no custom "all" value is set).
    """

    time_from: datetime
    time_to: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    all_selected: frozenset[str] = frozenset()


def render(sql: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse receives for ``sql`` in ``ctx`` (the three steps, in order)."""
    return expand_macros(interpolate(conditional_all(sql, ctx.all_selected), ctx.variables), ctx)


def conditional_all(sql: str, all_selected: frozenset[str]) -> str:
    """Replace each ``$__conditionalAll(condition, $var)`` (innermost last, like the plugin)."""
    start = sql.rfind(_CONDITIONAL_ALL)
    while start != -1:
        args, end = _arguments(sql, start + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            raise ValueError(f"$__conditionalAll takes 2 arguments, got {len(args)}")
        name = _VAR_IN_ARG.search(args[1])
        phrase = "1=1" if name is not None and name.group(0) in all_selected else args[0]
        sql = sql[:start] + phrase + sql[end:]
        start = sql.rfind(_CONDITIONAL_ALL)
    return sql


def interpolate(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    """Template variables replaced as Grafana's ``templateSrv.replace`` does."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name not in variables:
            return match.group(0)
        return _format(variables[name], fmt)

    return _VARIABLE.sub(replace, sql)


def _format(value: str | Sequence[str], fmt: str | None) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt is None:  # the plugin's own default: arrays quoted, a single value as it is
        return value if isinstance(value, str) else "'" + "','".join(values) + "'"
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "raw":
        return value if isinstance(value, str) else ",".join(values)
    raise ValueError(f"variable format {fmt!r} is not emulated here")


def expand_macros(sql: str, ctx: QueryContext) -> str:
    """The plugin's backend macros expanded for ``ctx``'s time range and interval."""
    out: list[str] = []
    pos = 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue
        name, end = match.group(1), match.end()
        args: list[str] = []
        if end < len(sql) and sql[end] == "(":
            args, end = _arguments(sql, end)
        out.append(sql[pos : match.start()])
        out.append(_macro(name, [a.strip() for a in args], ctx))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def _macro(name: str, args: list[str], ctx: QueryContext) -> str:
    start, end = ctx.time_from, ctx.time_to
    seconds = max(int(ctx.interval.total_seconds()), 1)
    millis = max(int(ctx.interval / timedelta(milliseconds=1)), 1)

    def expect(n: int) -> None:
        if len(args) != n:
            raise ValueError(f"$__{name} takes {n} argument(s), got {len(args)}")

    if name in ("fromTime", "toTime", "fromTime_ms", "toTime_ms", "interval_s"):
        expect(0)
    match name:
        case "fromTime":
            return _dt(start)
        case "toTime":
            return _dt(end)
        case "fromTime_ms":
            return _dt64(start)
        case "toTime_ms":
            return _dt64(end)
        case "interval_s":
            return str(seconds)
        case "timeFilter":
            expect(1)
            return f"{args[0]} >= {_dt(start)} AND {args[0]} <= {_dt(end)}"
        case "timeFilter_ms":
            expect(1)
            return f"{args[0]} >= {_dt64(start)} AND {args[0]} <= {_dt64(end)}"
        case "dateFilter":
            expect(1)
            return f"{args[0]} >= {_date(start)} AND {args[0]} <= {_date(end)}"
        case "dateTimeFilter" | "dt":
            expect(2)
            dates = f"({args[0]} >= {_date(start)} AND {args[0]} <= {_date(end)})"
            times = f"({args[1]} >= {_dt(start)} AND {args[1]} <= {_dt(end)})"
            return f"{dates} AND {times}"
        case "timeInterval":
            expect(1)
            return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {seconds} second)"
        case "timeInterval_ms":
            expect(1)
            return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {millis} millisecond)"
    raise ValueError(f"unknown macro $__{name}")


def _dt(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())})"


def _dt64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(moment.timestamp() * 1000)})"


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(UTC).strftime('%Y-%m-%d')}')"


def _arguments(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose ``(`` is at ``open_paren`` (commas
    inside nested brackets belong to the argument) and the index just after its ``)``."""
    depth, args, begin = 0, [], open_paren + 1
    for i in range(open_paren, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[begin:i])
                return args, i + 1
        elif char == "," and depth == 1:
            args.append(sql[begin:i])
            begin = i + 1
    raise ValueError(f"unbalanced parentheses after position {open_paren}")
