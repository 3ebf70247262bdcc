"""Pipeline health (Prometheus): collector, worker, sink and end-to-end freshness.

Every series comes from :mod:`funnel.metrics` (the names are built from its constants here,
and a test checks every name the committed JSON uses against ``funnel.metrics.ALL``).
Counters are read as per-second rates, histograms as p50 / p99 over ``$__rate_interval``.
"""

from __future__ import annotations

from funnel import metrics as m

from .common import series_options, stat_options
from .model import Dashboard, Panel, PromQuery

__all__ = ["pipeline"]

UID = "funnel-pipeline"
_RATE = "[$__rate_interval]"


def pipeline() -> Dashboard:
    return Dashboard(
        uid=UID,
        title="Pipeline health",
        description="Collector, worker and sink metrics from Prometheus: accepted and rejected "
        "events, latencies, consumer lag, dedup hits, late events, dead letters, sink "
        "batches and retries, state size and end-to-end freshness.",
        time_from="now-6h",
        refresh="30s",
        tags=("funnel", "operations"),
        panels=(
            _sink_state(),
            _series(
                "Events accepted / rejected",
                f"sum by (outcome) (rate({m.COLLECTOR_EVENTS}_total{_RATE}))",
                "{{outcome}}",
                "Events per second the collector accepted or rejected.",
                unit="reqps",
            ),
            _series(
                "Rejections by reason",
                f"sum by (reason) (rate({m.COLLECTOR_REJECTIONS}_total{_RATE}))",
                "{{reason}}",
                "Rejected events per second by machine-readable reason.",
                unit="reqps",
            ),
            _quantiles(
                "Produce latency (collector ack)",
                m.COLLECTOR_ACK_SECONDS,
                "Request received → events durable (produced and acknowledged, or committed).",
            ),
            _panel(
                "Dead letters",
                "Events sent to the dead-letter path per second, and dead letters that could "
                "not be written.",
                (
                    PromQuery(
                        f"sum(rate({m.COLLECTOR_REJECTIONS}_total{_RATE}))", "collector", "A"
                    ),
                    PromQuery(
                        f'sum(rate({m.WORKER_EVENTS}_total{{outcome="rejected"}}{_RATE}))',
                        "worker",
                        "B",
                    ),
                    PromQuery(
                        f"sum(rate({m.COLLECTOR_DEAD_LETTER_FAILURES}_total{_RATE}))",
                        "write failures",
                        "C",
                    ),
                ),
                unit="reqps",
            ),
            _panel(
                "Consumer lag per partition",
                "Records behind the end of each partition, for the worker and the sink.",
                (
                    PromQuery(
                        f"max by (topic, partition) ({m.WORKER_CONSUMER_LAG})",
                        "worker {{topic}}/{{partition}}",
                        "A",
                    ),
                    PromQuery(
                        f"max by (topic, partition) ({m.SINK_CONSUMER_LAG})",
                        "sink {{topic}}/{{partition}}",
                        "B",
                    ),
                ),
            ),
            _quantiles(
                "Processing latency",
                m.WORKER_PROCESSING_LAG_SECONDS,
                "Collector receipt → processed by a worker.",
            ),
            _quantiles("Worker batch time", m.WORKER_BATCH_SECONDS, "Processing time of a batch."),
            _panel(
                "Worker outcomes",
                "Events per second by outcome: applied, reordered, late, duplicate (retries "
                "included), rejected; and events a customer's person held for the history of a "
                "device just linked to them (held), or let go on without it after "
                "--hold-limit (waited_out: an answer lost, a bug's trace).",
                (
                    PromQuery(
                        f"sum by (outcome) (rate({m.WORKER_EVENTS}_total{_RATE}))",
                        "{{outcome}}",
                        "A",
                    ),
                    PromQuery(
                        f"sum by (how) (rate({m.WORKER_HELD_EVENTS}_total{_RATE}))",
                        "{{how}}",
                        "B",
                    ),
                ),
                unit="reqps",
            ),
            _panel(
                "Dedup hits",
                "Duplicates dropped: events already applied (client retries, re-deliveries) "
                "and re-sent facts the sink had landed.",
                (
                    PromQuery(
                        f'sum(rate({m.WORKER_EVENTS}_total{{outcome="duplicate"}}{_RATE}))',
                        "worker events",
                        "A",
                    ),
                    PromQuery(
                        f"sum by (table) (rate({m.SINK_DUPLICATES}_total{_RATE}))",
                        "sink {{table}}",
                        "B",
                    ),
                ),
                unit="reqps",
            ),
            _panel(
                "Late and reordered events",
                "Events beyond the lateness bound (corrected) and events applied out of order.",
                (
                    PromQuery(
                        f'sum(rate({m.WORKER_EVENTS}_total{{outcome="late"}}{_RATE}))', "late", "A"
                    ),
                    PromQuery(
                        f'sum(rate({m.WORKER_EVENTS}_total{{outcome="reordered"}}{_RATE}))',
                        "reordered",
                        "B",
                    ),
                ),
                unit="reqps",
            ),
            _series(
                "Worker records replayed",
                f"sum by (reason) (rate({m.WORKER_REPLAYED_RECORDS}_total{_RATE}))",
                "{{reason}}",
                "Input records a worker will process again: 'rebalance' (their batch ended "
                "after a rebalance began), 'skipped' (records before them were skipped in a "
                "rebalance, so the partition is read again). Spikes at rebalances are "
                "normal; a steady rate is not.",
                unit="reqps",
            ),
            _panel(
                "State size and erasures",
                "Persons held in each worker's state, and the person states and device links "
                "funnel forget erased (over the last hour).",
                (
                    PromQuery(f"sum by (instance) ({m.WORKER_STATE_PERSONS})", "{{instance}}", "A"),
                    PromQuery(
                        f"sum by (kind) (increase({m.WORKER_ERASED}_total[1h]))",
                        "erased: {{kind}}",
                        "B",
                    ),
                ),
            ),
            _quantiles("Sink batch size", m.SINK_BATCH_ROWS, "Rows per insert.", unit="short"),
            _quantiles("Sink insert latency", m.SINK_INSERT_SECONDS, "Insert latency."),
            _panel(
                "Sink retries, rows committed and refused",
                "Inserts retried after a store error, rows committed per table, and rows the "
                "store refused on their own (dead-lettered to rejected_events).",
                (
                    PromQuery(f"sum(rate({m.SINK_RETRIES}_total{_RATE}))", "retries", "A"),
                    PromQuery(
                        f"sum by (table) (rate({m.SINK_ROWS}_total{_RATE}))", "rows {{table}}", "B"
                    ),
                    PromQuery(
                        f"sum by (table) (rate({m.SINK_REFUSED_ROWS}_total{_RATE}))",
                        "refused {{table}}",
                        "C",
                    ),
                ),
                unit="reqps",
            ),
            _freshness_heatmap(),
            _quantiles(
                "Freshness p50 / p99",
                m.FRESHNESS_SECONDS,
                "Collector receipt → row committed in ClickHouse.",
            ),
            _series(
                "Persons reaching each step",
                f"sum by (funnel, step) (increase({m.STAGE_REACHED}_total{_RATE}))",
                "{{funnel}} {{step}}",
                "Persons reaching a step per interval, net of corrections, as committed.",
                width=24,
            ),
        ),
    )


def _panel(
    title: str,
    description: str,
    targets: tuple[PromQuery, ...],
    *,
    unit: str = "short",
    width: int = 12,
) -> Panel:
    return Panel(
        type="timeseries",
        title=title,
        description=description,
        targets=targets,
        width=width,
        height=8,
        unit=unit,
        options=series_options(),
    )


def _series(
    title: str, expr: str, legend: str, description: str, *, unit: str = "short", width: int = 12
) -> Panel:
    return _panel(title, description, (PromQuery(expr, legend),), unit=unit, width=width)


def _quantiles(title: str, histogram: str, description: str, *, unit: str = "s") -> Panel:
    def q(level: str) -> str:
        return f"histogram_quantile({level}, sum by (le) (rate({histogram}_bucket{_RATE})))"

    return _panel(
        f"{title} p50 / p99" if "p50" not in title else title,
        description,
        (PromQuery(q("0.5"), "p50", "A"), PromQuery(q("0.99"), "p99", "B")),
        unit=unit,
    )


def _sink_state() -> Panel:
    return Panel(
        type="stat",
        title="Sink: store up / paused",
        description="1 while the store accepts inserts (0: failing); 1 while the sink has "
        "paused consumption (backpressure).",
        targets=(
            PromQuery(f"min({m.SINK_STORE_UP})", "store up", "A"),
            PromQuery(f"max({m.SINK_PAUSED})", "paused", "B"),
        ),
        width=24,
        height=4,
        options=stat_options(),
    )


def _freshness_heatmap() -> Panel:
    return Panel(
        type="heatmap",
        title="Freshness histogram",
        description="How many events landed within each freshness bucket per interval.",
        targets=(
            PromQuery(
                f"sum by (le) (increase({m.FRESHNESS_SECONDS}_bucket{_RATE}))",
                "{{le}}",
                format="heatmap",
            ),
        ),
        height=8,
        unit="s",
        options={
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"mode": "single", "yHistogram": True},
        },
    )
