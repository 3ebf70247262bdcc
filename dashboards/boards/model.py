"""A small typed model of Grafana dashboard JSON: what the funnel dashboards use, no more.

Each class renders itself with ``to_json()`` into the dashboard model Grafana stores
(``schemaVersion`` :data:`SCHEMA_VERSION`, the Grafana 12 model). The model is plain data:
building a dashboard does no I/O, and rendering the same objects twice gives the same JSON,
which is what lets a test compare the committed files with a fresh generation.

ClickHouse panels declare the columns their query returns (:attr:`SqlQuery.columns`); the
tests run every query on chDB and hold the result to that declaration, and table panels show
the columns in that order under readable headers (an ``organize`` transformation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, TypeAlias

__all__ = [
    "CLICKHOUSE",
    "PROMETHEUS",
    "SCHEMA_VERSION",
    "ConstantVariable",
    "CustomVariable",
    "Dashboard",
    "DatasourceRef",
    "Format",
    "Json",
    "Panel",
    "PromQuery",
    "QueryVariable",
    "SqlQuery",
    "Variable",
]

#: The dashboard model version of Grafana 12 (what Grafana writes when it saves one).
SCHEMA_VERSION = 41

Json: TypeAlias = dict[str, object]


@dataclass(frozen=True, slots=True)
class DatasourceRef:
    """A datasource by plugin type and uid (the uids are fixed by the provisioning file)."""

    type: str
    uid: str

    def to_json(self) -> Json:
        return {"type": self.type, "uid": self.uid}


CLICKHOUSE = DatasourceRef("grafana-clickhouse-datasource", "clickhouse")
PROMETHEUS = DatasourceRef("prometheus", "prometheus")


class Format(IntEnum):
    """The ClickHouse plugin's result formats (sqlds ``FormatQueryOption``)."""

    TIME_SERIES = 0  # a time column first; long results (label columns) are made wide
    TABLE = 1


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """A raw-SQL target of the ClickHouse plugin.

    ``columns`` are the names the query returns, in order. For :attr:`Format.TIME_SERIES`
    the first is the time column; string columns after it are series labels.
    """

    sql: str
    columns: tuple[str, ...]
    format: Format = Format.TABLE
    ref_id: str = "A"

    def to_json(self) -> Json:
        return {
            "refId": self.ref_id,
            "datasource": CLICKHOUSE.to_json(),
            "editorType": "sql",
            "queryType": "timeseries" if self.format is Format.TIME_SERIES else "table",
            "format": int(self.format),
            "rawSql": self.sql.strip(),
        }


@dataclass(frozen=True, slots=True)
class PromQuery:
    """A PromQL target; ``legend`` is Grafana's legend format (``{{label}}``)."""

    expr: str
    legend: str = ""
    ref_id: str = "A"
    format: Literal["time_series", "heatmap"] = "time_series"

    def to_json(self) -> Json:
        return {
            "refId": self.ref_id,
            "datasource": PROMETHEUS.to_json(),
            "editorMode": "code",
            "expr": self.expr.strip(),
            "legendFormat": self.legend or "__auto",
            "format": self.format,
            "range": True,
        }


Target = SqlQuery | PromQuery


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel: a visualisation type, its queries and its size on the 24-column grid.

    ``options`` and ``defaults`` (the field config defaults: unit, decimals, …) are passed
    through as Grafana names them; ``rename`` maps column names to table headers.
    """

    type: Literal["barchart", "bargauge", "heatmap", "piechart", "stat", "table", "timeseries"]
    title: str
    targets: tuple[Target, ...]
    description: str = ""
    width: int = 12
    height: int = 8
    unit: str = "short"
    options: Mapping[str, object] = field(default_factory=dict)
    defaults: Mapping[str, object] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)

    @property
    def datasource(self) -> DatasourceRef:
        kinds = {type(t) for t in self.targets}
        if len(kinds) != 1:
            raise ValueError(f"panel {self.title!r} mixes datasources or has no target")
        return CLICKHOUSE if kinds == {SqlQuery} else PROMETHEUS

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        out: Json = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": self.datasource.to_json(),
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": [t.to_json() for t in self.targets],
            "fieldConfig": {"defaults": {"unit": self.unit, **self.defaults}, "overrides": []},
            "options": dict(self.options),
        }
        table = [t for t in self.targets if isinstance(t, SqlQuery) and t.format is Format.TABLE]
        if self.type == "table" and len(table) == 1:
            columns = table[0].columns
            out["transformations"] = [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {},
                        "indexByName": {name: i for i, name in enumerate(columns)},
                        "renameByName": {c: self.rename[c] for c in columns if c in self.rename},
                    },
                }
            ]
        return out


@dataclass(frozen=True, slots=True)
class QueryVariable:
    """A variable whose options come from a ClickHouse query (one column: value = text).

    ``refresh``: 1 loads the options with the dashboard, 2 also on every time range change
    (for queries that use the time range macros).
    """

    name: str
    label: str
    sql: str
    multi: bool = False
    include_all: bool = False
    refresh: Literal[1, 2] = 1
    default: str | None = None

    def to_json(self) -> Json:
        current: Json = {}
        if self.default is not None:
            current = {"selected": True, "text": self.default, "value": self.default}
        elif self.include_all:
            current = {"selected": True, "text": ["All"], "value": ["$__all"]}
        return {
            "type": "query",
            "name": self.name,
            "label": self.label,
            "datasource": CLICKHOUSE.to_json(),
            "query": self.sql.strip(),
            "definition": self.sql.strip(),
            "refresh": self.refresh,
            "multi": self.multi,
            "includeAll": self.include_all,
            "sort": 1,
            "current": current,
            "options": [],
            "hide": 0,
        }


@dataclass(frozen=True, slots=True)
class CustomVariable:
    """A variable with a fixed list of values."""

    name: str
    label: str
    values: tuple[str, ...]
    default: tuple[str, ...]
    multi: bool = False

    def to_json(self) -> Json:
        chosen = list(self.default) if self.multi else self.default[0]
        return {
            "type": "custom",
            "name": self.name,
            "label": self.label,
            "query": ",".join(self.values),
            "multi": self.multi,
            "includeAll": False,
            "current": {"selected": True, "text": chosen, "value": chosen},
            "options": [
                {"selected": v in self.default, "text": v, "value": v} for v in self.values
            ],
            "hide": 0,
        }


@dataclass(frozen=True, slots=True)
class ConstantVariable:
    """A hidden constant (the database name: change it once, every query follows)."""

    name: str
    value: str

    def to_json(self) -> Json:
        return {
            "type": "constant",
            "name": self.name,
            "query": self.value,
            "current": {"text": self.value, "value": self.value},
            "hide": 2,
        }


Variable = QueryVariable | CustomVariable | ConstantVariable


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A dashboard: panels laid out left to right, wrapping at 24 columns."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    time_from: str = "now-7d"
    refresh: str = "1m"
    tags: tuple[str, ...] = ("funnel",)

    def to_json(self) -> Json:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "timezone": "browser",
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "refresh": self.refresh,
            "links": [
                {
                    "type": "dashboards",
                    "title": "Funnel dashboards",
                    "tags": ["funnel"],
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                    "icon": "external link",
                    "targetBlank": False,
                    "tooltip": "",
                    "url": "",
                }
            ],
            "annotations": {"list": []},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "panels": _layout(self.panels),
        }


def _layout(panels: Sequence[Panel]) -> list[Json]:
    out: list[Json] = []
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append(panel.to_json(number, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return out
