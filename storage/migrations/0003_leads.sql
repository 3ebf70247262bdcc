-- Lead temperature changes with their routing queue (DESIGN §8). One row per change; the
-- latest per person is the lead's current temperature (also in persons.lead_temperature).

CREATE TABLE IF NOT EXISTS $db.lead_changes
(
    site_id     LowCardinality(String),
    person_id   String,
    customer_id String,
    temperature LowCardinality(String),
    previous    LowCardinality(String),
    queue       LowCardinality(String),
    changed_at  DateTime64(3, 'UTC'),
    manager_id  String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(changed_at)
ORDER BY (site_id, person_id, changed_at)
SETTINGS non_replicated_deduplication_window = 10000;
