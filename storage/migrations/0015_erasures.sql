-- Erasures (funnel forget): the record a controller keeps of each one, without the erased
-- data: the site, who asked, when, and how many rows left which tables.

CREATE TABLE IF NOT EXISTS $db.erasures
(
    site_id      LowCardinality(String),
    requested_by String,
    requested_at DateTime64(3, 'UTC'),
    rows         UInt64,
    tables       Map(String, UInt64)
)
ENGINE = MergeTree
ORDER BY (site_id, requested_at);
