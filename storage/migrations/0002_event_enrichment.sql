-- Server-side enrichment of events (collector): anonymised IP, user agent families, the bot
-- flag (bots are flagged, not dropped: filter them with `WHERE NOT is_bot`), clock skew.

ALTER TABLE $db.events
    ADD COLUMN IF NOT EXISTS is_bot Bool DEFAULT false,
    ADD COLUMN IF NOT EXISTS browser LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS os LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS device LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS ip String DEFAULT '',
    ADD COLUMN IF NOT EXISTS clock_skew_ms Nullable(Int64),
    ADD COLUMN IF NOT EXISTS clamped Bool DEFAULT false;
