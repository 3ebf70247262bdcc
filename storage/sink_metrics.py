"""The sink's Prometheus series (names in :mod:`funnel.metrics`), served by ``funnel sink
--metrics-port``.

:class:`SinkMetrics` is what :class:`storage.sink.Sink` reports to; it owns its registry, so
two sinks in one process (tests) do not share series.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from funnel import metrics as names
from storage.fact_columns import Block

__all__ = ["SinkMetrics"]


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    """One column of ``rows``: read off a typed block's Arrow column, or off the row dicts."""
    if isinstance(rows, Block):
        return rows.column(name)
    return [row.get(name) for row in rows]


class SinkMetrics:
    """Counters, gauges and histograms of one sink (see :mod:`funnel.metrics`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rows = Counter(names.SINK_ROWS, "Rows committed to ClickHouse", ["table"], registry=r)
        self.duplicates = Counter(
            names.SINK_DUPLICATES, "Re-sent facts dropped by fact_id", ["table"], registry=r
        )
        self.batch_rows = Histogram(
            names.SINK_BATCH_ROWS,
            "Rows per insert",
            buckets=(10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000),
            registry=r,
        )
        self.insert_seconds = Histogram(
            names.SINK_INSERT_SECONDS,
            "Insert latency",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.retries = Counter(names.SINK_RETRIES, "Inserts refused and retried", registry=r)
        self.refused_rows_total = Counter(
            names.SINK_REFUSED_ROWS,
            "Rows the store refused on their own (dead-lettered)",
            ["table"],
            registry=r,
        )
        self.store_up = Gauge(
            names.SINK_STORE_UP, "1 while the store accepts inserts, 0 while failing", registry=r
        )
        self.paused = Gauge(names.SINK_PAUSED, "1 while consumption is paused", registry=r)
        self.lag = Gauge(
            names.SINK_CONSUMER_LAG,
            "Records behind the end of the partition",
            ["topic", "partition"],
            registry=r,
        )
        self.freshness = Histogram(
            names.FRESHNESS_SECONDS,
            "Collector receipt of an event to its row committed in ClickHouse",
            buckets=names.FRESHNESS_BUCKETS,
            registry=r,
        )
        self.stage_reached = Counter(
            names.STAGE_REACHED,
            "Stage rows (sign +1) committed: persons reaching a funnel step",
            ["site", "funnel", "step"],
            registry=r,
        )
        self.store_up.set(1)
        self.paused.set(0)

    def refused_rows(self, table: str, n: int) -> None:
        """``n`` rows of ``table`` were refused by the store and dead-lettered."""
        self.refused_rows_total.labels(table).inc(n)

    def landed(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        duplicates: int,
        seconds: float,
        now: datetime,
    ) -> None:
        """A batch of ``table`` was committed (``rows`` fresh: row dicts or a typed block,
        ``duplicates`` dropped)."""
        self.store_up.set(1)
        self.duplicates.labels(table).inc(duplicates)
        if not rows:
            return
        self.rows.labels(table).inc(len(rows))
        self.batch_rows.observe(len(rows))
        self.insert_seconds.observe(seconds)
        if table == "events":
            self._fresh(_column(rows, "received_at"), now)
        elif table == "stage_reached":
            steps = Tally(
                (str(site), str(funnel), str(step))
                for site, funnel, step, sign in zip(
                    *(_column(rows, name) for name in ("site_id", "funnel", "step", "sign")),
                    strict=True,
                )
                if int(sign if sign is not None else 1) > 0
            )
            for (site, funnel, step), n in steps.items():
                self.stage_reached.labels(site, funnel, step).inc(n)

    def _fresh(self, times: Iterable[Any], now: datetime) -> None:
        for received in times:
            if isinstance(received, str):
                try:
                    received = datetime.fromisoformat(received)
                except ValueError:
                    continue
            if isinstance(received, datetime) and received.tzinfo is not None:
                self.freshness.observe(max(0.0, (now - received).total_seconds()))

    def refused(self) -> None:
        self.retries.inc()
        self.store_up.set(0)

    def consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of the partitions held now (others are dropped: they moved away)."""
        self.lag.clear()
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)
