-- Exactly once from an at-least-once stream (DESIGN §9): every fact a worker emits carries a
-- deterministic `fact_id` (the position of the input that caused it, `partition:offset:index`
-- on the person-events topic), so a fact re-sent after a crash or a rebalance is the same
-- fact, and the sink drops it. `landed_at` is when the sink wrote the row: a restarted sink
-- reloads the ids it landed within its dedup horizon from it. Rows written by the embedded
-- runner have no fact_id (''), and are never deduplicated by it.

ALTER TABLE $db.events ADD COLUMN IF NOT EXISTS fact_id String DEFAULT '';
ALTER TABLE $db.events ADD COLUMN IF NOT EXISTS landed_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE $db.stage_reached ADD COLUMN IF NOT EXISTS fact_id String DEFAULT '';
ALTER TABLE $db.stage_reached ADD COLUMN IF NOT EXISTS landed_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE $db.attributions ADD COLUMN IF NOT EXISTS fact_id String DEFAULT '';
ALTER TABLE $db.attributions ADD COLUMN IF NOT EXISTS landed_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE $db.lead_changes ADD COLUMN IF NOT EXISTS fact_id String DEFAULT '';
ALTER TABLE $db.lead_changes ADD COLUMN IF NOT EXISTS landed_at DateTime64(3, 'UTC') DEFAULT now64(3);
ALTER TABLE $db.persons ADD COLUMN IF NOT EXISTS fact_id String DEFAULT '';
ALTER TABLE $db.persons ADD COLUMN IF NOT EXISTS landed_at DateTime64(3, 'UTC') DEFAULT now64(3);
