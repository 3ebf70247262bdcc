-- Dead letters replayed after a fix (funnel dlq replay): one row per letter that landed, so
-- that it is never replayed twice. letter_key is the SHA-256 of the letter's site, receive
-- time and payload (producers/dead_letters.py).

CREATE TABLE IF NOT EXISTS $db.dead_letter_replays
(
    site_id     LowCardinality(String),
    letter_key  String,
    replayed_at DateTime64(3, 'UTC'),
    event_ids   Array(String)
)
ENGINE = ReplacingMergeTree(replayed_at)
ORDER BY (site_id, letter_key);
