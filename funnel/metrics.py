"""The names of every Prometheus series the pipeline exports, in one place (STYLE §7).

Adapters create the series with prometheus-client from these constants; alert rules and
dashboards (``dashboards/``) use the same names, and a test checks that every name they use
is defined here. Counters are exported with the ``_total`` suffix Prometheus adds.

Collector (``funnel serve``, ``GET /metrics`` on its port):

* ``funnel_collector_events_total{outcome}`` — ``accepted`` / ``rejected`` events;
* ``funnel_collector_rejections_total{reason}`` — rejected events by machine-readable reason;
* ``funnel_collector_requests_total{route,status}``;
* ``funnel_collector_dead_letter_failures_total`` — rejections that could not be written;
* ``funnel_collector_ack_seconds`` — histogram: request received → events durable (produced
  to Kafka and acknowledged, or committed to the embedded store): the produce latency.

Worker (``funnel worker``, ``GET /metrics`` on its web port):

* ``funnel_worker_events_total{outcome}`` — ``retry`` and ``duplicate`` (dedup hits: a client
  retry or a re-delivered event), ``rejected`` (dead-lettered), ``applied``, ``reordered``,
  ``late`` (beyond the lateness bound, corrected);
* ``funnel_worker_batch_seconds`` — histogram: processing time of a batch;
* ``funnel_worker_replayed_records_total{reason}`` — input records to be processed again
  (``stream_processors/commits.py``): ``rebalance`` (their batch finished after a rebalance
  began: neither written nor committed), ``skipped`` (records before them in the partition
  were skipped in a rebalance: the partition is read again from its commit position). A
  steady rate outside rebalances is a bug;
* ``funnel_worker_processing_lag_seconds`` — histogram: collector receipt → processed;
* ``funnel_worker_consumer_lag{topic,partition}`` — records behind the end of the partition;
* ``funnel_worker_state_persons`` — persons held in this worker's state.
* ``funnel_worker_erased_total{kind}`` — person states (``forget``) and device links
  (``unlink``) erased by ``funnel forget``.

Sink (``funnel sink``, ``--metrics-port``):

* ``funnel_sink_rows_total{table}`` — rows committed to ClickHouse;
* ``funnel_sink_duplicates_total{table}`` — re-sent facts dropped by ``fact_id``;
* ``funnel_sink_batch_rows`` — histogram: rows per insert;
* ``funnel_sink_insert_seconds`` — histogram: insert latency;
* ``funnel_sink_retries_total`` — inserts retried after a store error;
* ``funnel_sink_refused_rows_total{table}`` — rows the store refused on their own (a value
  that passed validation but not the column or a constraint), dead-lettered to
  ``rejected_events`` while the rest of the batch landed;
* ``funnel_sink_store_up`` — 1 while the store accepts inserts, 0 while it is failing;
* ``funnel_sink_paused`` — 1 while consumption is paused (backpressure);
* ``funnel_sink_consumer_lag{topic,partition}`` — records behind the end of the partition;
* ``funnel_freshness_seconds`` — histogram: an event's receipt by the collector → its row
  committed in ClickHouse (end-to-end freshness; receipt time, not the client's clock, so a
  device with a wrong clock or a late event does not distort it);
* ``funnel_stage_reached_total{site,funnel,step}`` — persons reaching a step: stage rows
  with ``sign = +1`` as committed (the funnel alerts: step conversion against its baseline,
  lead flow). A counter only grows, so a correction (rare: a merge or an out-of-order event
  moving a step) counts its re-added row again; rates are approximate by that much.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALL", "FRESHNESS_BUCKETS"]

COLLECTOR_EVENTS: Final = "funnel_collector_events"
COLLECTOR_REJECTIONS: Final = "funnel_collector_rejections"
COLLECTOR_REQUESTS: Final = "funnel_collector_requests"
COLLECTOR_DEAD_LETTER_FAILURES: Final = "funnel_collector_dead_letter_failures"
COLLECTOR_ACK_SECONDS: Final = "funnel_collector_ack_seconds"

WORKER_EVENTS: Final = "funnel_worker_events"
WORKER_BATCH_SECONDS: Final = "funnel_worker_batch_seconds"
WORKER_REPLAYED_RECORDS: Final = "funnel_worker_replayed_records"
WORKER_PROCESSING_LAG_SECONDS: Final = "funnel_worker_processing_lag_seconds"
WORKER_CONSUMER_LAG: Final = "funnel_worker_consumer_lag"
WORKER_STATE_PERSONS: Final = "funnel_worker_state_persons"
WORKER_ERASED: Final = "funnel_worker_erased"
WORKER_HELD_EVENTS: Final = "funnel_worker_held_events"

SINK_ROWS: Final = "funnel_sink_rows"
SINK_DUPLICATES: Final = "funnel_sink_duplicates"
SINK_BATCH_ROWS: Final = "funnel_sink_batch_rows"
SINK_INSERT_SECONDS: Final = "funnel_sink_insert_seconds"
SINK_RETRIES: Final = "funnel_sink_retries"
SINK_REFUSED_ROWS: Final = "funnel_sink_refused_rows"
SINK_STORE_UP: Final = "funnel_sink_store_up"
SINK_PAUSED: Final = "funnel_sink_paused"
SINK_CONSUMER_LAG: Final = "funnel_sink_consumer_lag"
FRESHNESS_SECONDS: Final = "funnel_freshness_seconds"
STAGE_REACHED: Final = "funnel_stage_reached"

#: Every series name (without the ``_total`` / ``_bucket`` suffixes Prometheus adds).
ALL: Final = frozenset(
    value for key, value in dict(globals()).items() if key.isupper() and isinstance(value, str)
)

#: Freshness buckets (seconds): sub-second embedded landing up to a stalled pipeline.
FRESHNESS_BUCKETS: Final = (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800)
