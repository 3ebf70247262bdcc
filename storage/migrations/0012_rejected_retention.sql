-- Dead letters hold raw payloads, personal data a sender got wrong: kept 30 days by default
-- (it was 90), counted from when they were recorded (recorded_at), not from when the item
-- was received: a replayed or simulated history's letters are kept as long as fresh ones.
-- `funnel migrate --keep-rejected DAYS|forever` (FUNNEL_RETENTION_REJECTED_DAYS) sets another
-- retention, and --keep-events / --keep-facts those of the events and the facts
-- (storage/retention.py).

ALTER TABLE $db.rejected_events
    ADD COLUMN IF NOT EXISTS recorded_at DateTime64(3, 'UTC') DEFAULT now64(3);

ALTER TABLE $db.rejected_events MODIFY TTL toDateTime(recorded_at) + INTERVAL 30 DAY;
