-- Corrections: a stage fact that changed (an out-of-order event moved it, or an identity
-- merge) is retracted by a row with sign = -1 and re-added. Count with sum(sign).

ALTER TABLE $db.stage_reached ADD COLUMN IF NOT EXISTS sign Int8 DEFAULT 1;
