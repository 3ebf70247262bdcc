-- Full-fidelity events (issue 18): `events` keeps everything the core reads, so that facts can
-- be re-derived from it (funnel reprocess) and a person's events found whole (funnel forget).
-- For SQL: the full referrer, the user agent as sent, the click ids (gclid, fbclid, ...) and
-- the lead's form. `raw` is the event as the core read it (its JSON after intake: the
-- collector's clock correction and enrichment applied), read back field for field.

ALTER TABLE $db.events
    ADD COLUMN IF NOT EXISTS referrer String DEFAULT '',
    ADD COLUMN IF NOT EXISTS user_agent String DEFAULT '',
    ADD COLUMN IF NOT EXISTS click_ids Map(String, String),
    ADD COLUMN IF NOT EXISTS lead_form LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS raw String DEFAULT '' CODEC(ZSTD(3));
