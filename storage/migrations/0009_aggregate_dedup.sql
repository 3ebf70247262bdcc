-- The aggregates deduplicate replays like the fact tables do. A replayed insert (the same
-- insert_deduplication_token) is dropped by the fact table, but its materialized views still
-- wrote to their targets: the agg_* tables now keep a deduplication window of their own, so
-- the views' blocks of a replay are dropped too (found by review: a sink retry after a lost
-- acknowledgement counted twice in agg_stage_*). Hours are kept for good: a report for an
-- hour-aligned period older than a TTL would have read an empty aggregate.

ALTER TABLE $db.agg_stage_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE $db.agg_stage_hour MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE $db.agg_stage_day MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE $db.agg_events_minute MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE $db.agg_attribution_day MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE $db.agg_stage_hour REMOVE TTL;
