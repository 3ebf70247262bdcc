-- Dead letters hold raw payloads, personal data a sender got wrong: kept 30 days by default
-- (it was 90). `funnel migrate --keep-rejected DAYS|forever` (FUNNEL_RETENTION_REJECTED_DAYS)
-- sets another retention, and --keep-events / --keep-facts those of the events and the facts
-- (storage/retention.py).

ALTER TABLE $db.rejected_events MODIFY TTL toDateTime(received_at) + INTERVAL 30 DAY;
