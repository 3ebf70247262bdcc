"""Rows as an Arrow block for ClickHouse: the fast insert path of the embedded store.

:func:`arrow_block` turns rows (mappings of column name to plain Python or JSON values) into
a :class:`pyarrow.Table` typed after the table's ClickHouse columns, which chDB reads without
parsing text (``INSERT … SELECT … FROM Python(block)``). It costs about one pass over the rows plus
Arrow's C conversions, where JSON text costs an encode in Python and a parse in the engine.

Contract: the block means exactly what the same rows mean as ``JSONEachRow`` (the general
path, :func:`storage.backends.encode_rows`), or :func:`arrow_block` returns ``None`` and the
caller takes the general path. So the fast path only takes what it maps exactly:

* every row has the same keys in the same order (rows decoded from one producer's JSON do);
  a key that is no column is ignored, as ``JSONEachRow`` ignores unknown fields;
* column types String/FixedString/UUID/Enum (``str``), integers (``int``), floats, Bool,
  DateTime/DateTime64 (ISO 8601 text *with* an offset, or aware ``datetime``), Date
  (``YYYY-MM-DD`` or ``date``), Decimal (text, ``Decimal`` or numbers; exact at the column's
  scale), Map of those, each possibly Nullable or LowCardinality;
* ``None`` is NULL in a Nullable column and the column's default otherwise (the engine's
  ``input_format_null_as_default``, as for JSON).

Anything else (mixed key sets, other types, a value Arrow cannot convert exactly) returns
``None``.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no annotations
import pyarrow.compute as pc  # type: ignore[import-untyped]

__all__ = ["ColumnCache", "arrow_block"]

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_STRINGS = ("String", "FixedString(", "UUID", "Enum8(", "Enum16(", "IPv4", "IPv6")

Converter = Callable[[Sequence[object]], pa.Array]


class _Unsupported(Exception):
    """The rows do not fit the fast path: take the general one."""


def _strip(kind: str) -> tuple[str, bool]:
    """``kind`` without LowCardinality/Nullable wrappers, and whether it is Nullable."""
    nullable = False
    changed = True
    while changed:
        changed = False
        for wrapper in ("LowCardinality(", "Nullable("):
            if kind.startswith(wrapper):
                nullable = nullable or wrapper == "Nullable("
                kind, changed = kind[len(wrapper) : -1], True
    return kind, nullable


def _strings(values: Sequence[object]) -> pa.Array:
    return pa.array(values, pa.string())


def _integers(signed: bool) -> Converter:
    kind = pa.int64() if signed else pa.uint64()

    def convert(values: Sequence[object]) -> pa.Array:
        return pa.array(values, kind)  # True is 1, as JSON true is for an integer column

    return convert


def _floats(values: Sequence[object]) -> pa.Array:
    return pa.array(values, pa.float64())


def _bools(values: Sequence[object]) -> pa.Array:
    return pa.array(values, pa.bool_())


def _times(values: Sequence[object]) -> pa.Array:
    try:  # ISO 8601 text, as rows decoded from JSON carry them
        return pc.cast(pa.array(values, pa.string()), _TIMESTAMP)
    except pa.ArrowTypeError:  # datetime objects (rows straight from the core)
        if not all(v is None or (isinstance(v, datetime) and v.tzinfo) for v in values):
            raise _Unsupported("naive or mixed datetimes") from None
        return pa.array(values, _TIMESTAMP)


def _dates(values: Sequence[object]) -> pa.Array:
    try:
        return pc.cast(pa.array(values, pa.string()), pa.date32())
    except pa.ArrowTypeError:
        if any(isinstance(v, datetime) for v in values):
            raise _Unsupported("datetime into a Date column") from None
        return pa.array(values, pa.date32())


def _decimals(precision: int, scale: int) -> Converter:
    kind = pa.decimal128(max(precision, 1), scale)

    def convert(values: Sequence[object]) -> pa.Array:
        try:
            text = pa.array(values, pa.string())
        except pa.ArrowTypeError:
            if any(
                isinstance(v, bool) or not isinstance(v, str | int | float | Decimal | None)
                for v in values
            ):
                raise _Unsupported("not a number") from None
            text = pa.array([None if v is None else str(v) for v in values], pa.string())
        return pc.cast(text, kind)  # raises ArrowInvalid when the scale would drop digits

    return convert


def _maps(key: Converter, item: Converter, kind: pa.DataType) -> Converter:
    def convert(values: Sequence[object]) -> pa.Array:
        dicts: list[dict[Any, Any]] = []
        for value in values:
            if value is None:
                dicts.append({})  # a Map is never NULL: its default is the empty map
            elif isinstance(value, dict):
                dicts.append(value)
            else:
                raise _Unsupported("not a mapping")
        offsets = pa.array(list(itertools.accumulate(map(len, dicts), initial=0)), pa.int32())
        keys = key(list(itertools.chain.from_iterable(dicts)))
        items = item(list(itertools.chain.from_iterable(map(dict.values, dicts))))
        return pa.MapArray.from_arrays(offsets, keys, items, type=kind)

    return convert


def _converter(kind: str) -> tuple[Converter, pa.DataType]:
    """How values become an Arrow array for a ClickHouse type (raises :class:`_Unsupported`)."""
    inner, _ = _strip(kind)
    if inner.startswith(_STRINGS):
        return _strings, pa.string()
    if inner in ("Bool", "Boolean"):
        return _bools, pa.bool_()
    if inner.startswith(("Int", "UInt")) and inner[-1].isdigit():
        signed = inner.startswith("Int")
        return _integers(signed), pa.int64() if signed else pa.uint64()
    if inner in ("Float32", "Float64"):
        return _floats, pa.float64()
    if inner.startswith("DateTime"):
        return _times, _TIMESTAMP
    if inner in ("Date", "Date32"):
        return _dates, pa.date32()
    if inner.startswith("Decimal"):
        precision, scale = _decimal_shape(inner)
        return _decimals(precision, scale), pa.decimal128(max(precision, 1), scale)
    if inner.startswith("Map(") and inner.endswith(")"):
        key_kind, _, item_kind = inner[4:-1].partition(", ")
        key, key_type = _converter(key_kind)
        item, item_type = _converter(item_kind)
        if pa.types.is_map(key_type) or pa.types.is_map(item_type):
            raise _Unsupported("nested maps")
        map_type = pa.map_(key_type, item_type)
        return _maps(key, item, map_type), map_type
    raise _Unsupported(kind)


def _decimal_shape(kind: str) -> tuple[int, int]:
    """``(precision, scale)`` of ``Decimal(P, S)`` / ``Decimal32(S)`` … ``Decimal256(S)``."""
    head, _, args = kind.partition("(")
    numbers = [int(n) for n in args.rstrip(")").split(",") if n.strip()]
    bits = {"Decimal32": 9, "Decimal64": 18, "Decimal128": 38, "Decimal256": 76}
    if head in bits:
        return bits[head], numbers[0]
    if len(numbers) == 2 and numbers[0] <= 38:
        return numbers[0], numbers[1]
    raise _Unsupported(kind)


def arrow_block(
    rows: Sequence[Mapping[str, object]], columns: Mapping[str, str]
) -> pa.Table | None:
    """``rows`` as an Arrow table for a ClickHouse table with ``columns`` (name → type), or
    ``None`` when they do not fit the fast path (see the module docstring)."""
    first = tuple(rows[0])
    # The columns are read by position below, so every row must have the same keys in the
    # same order; keys decoded by one json.loads call are the same objects, which makes the
    # comparison cheap.
    if not all(tuple(row) == first for row in rows):
        return None
    if not all(isinstance(row, dict) for row in rows):
        return None
    # The transposition allocates a tracked object per row (its values view) and nothing
    # cyclic: collections in the middle would only walk the batch's rows again and again
    # (twice the cost of the block, measured). One collection after it does the same good.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _block(rows, first, columns)
    finally:
        if collecting:
            gc.enable()


def _block(
    rows: Sequence[Mapping[str, object]], first: tuple[str, ...], columns: Mapping[str, str]
) -> pa.Table | None:
    arrays, names = [], []
    try:
        for name, values in zip(first, zip(*map(dict.values, rows), strict=False), strict=True):  # type: ignore[arg-type]  # checked: every row is a dict
            kind = columns.get(name)
            if kind is None:
                continue
            convert, _ = _converter(kind)
            arrays.append(convert(values))
            names.append(name)
    except (_Unsupported, pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if not names:
        return None
    return pa.Table.from_arrays(arrays, names=names)


class ColumnCache:
    """Each table's ``name → ClickHouse type``, described once and again when rows carry a
    key the cached columns lack (a migration may have added it), at most every
    ``refresh_s`` seconds per table."""

    def __init__(self, refresh_s: float = 5.0) -> None:
        self.refresh_s = refresh_s
        self._columns: dict[tuple[str, ...], tuple[float, dict[str, str]]] = {}

    def get(
        self,
        key: tuple[str, ...],
        keys: Sequence[str],
        describe: Callable[[], dict[str, str]],
    ) -> dict[str, str]:
        now = time.monotonic()
        cached = self._columns.get(key)
        if cached is not None:
            at, columns = cached
            if all(k in columns for k in keys) or now - at < self.refresh_s:
                return columns
        columns = describe()
        self._columns[key] = (now, columns)
        return columns

    def forget(self, key: tuple[str, ...]) -> None:
        self._columns.pop(key, None)
