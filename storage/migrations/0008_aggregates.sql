-- Aggregates for the reports (DESIGN §9: free in name). Each is a SummingMergeTree (or
-- AggregatingMergeTree) table fed by a materialized view on inserts into a fact table, so a
-- report reads a few thousand pre-summed rows instead of scanning the facts.
--
-- Stage counts are exact under corrections: every person has at most one net row per funnel
-- and step in stage_reached (a correction retracts a row with sign = -1 and re-adds it), so
-- sum(sign) over any grouping of the rows counts distinct persons. The aggregates keep
-- sum(sign), never uniq(): a retraction must be able to subtract.
--
-- Funnel breakdowns use the entry touch: the channel and campaign in effect when the chain
-- that reached the step started (the channel that brought the person in), and time buckets
-- use entered_at (when that chain started), so each bucket is a cohort of funnel entries.

ALTER TABLE $db.stage_reached
    ADD COLUMN IF NOT EXISTS entry_channel LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS entry_campaign String DEFAULT '';

CREATE TABLE IF NOT EXISTS $db.agg_stage_minute
(
    bucket     DateTime('UTC'),
    site_id    LowCardinality(String),
    funnel     LowCardinality(String),
    step_index UInt8,
    channel    LowCardinality(String),
    campaign   String,
    persons    Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (site_id, funnel, bucket, step_index, channel, campaign)
TTL bucket + INTERVAL 14 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_stage_minute TO $db.agg_stage_minute AS
SELECT toStartOfMinute(entered_at) AS bucket, site_id, funnel, step_index,
       entry_channel AS channel, entry_campaign AS campaign, sum(sign) AS persons
FROM $db.stage_reached
GROUP BY bucket, site_id, funnel, step_index, channel, campaign;

CREATE TABLE IF NOT EXISTS $db.agg_stage_hour
(
    bucket     DateTime('UTC'),
    site_id    LowCardinality(String),
    funnel     LowCardinality(String),
    step_index UInt8,
    channel    LowCardinality(String),
    campaign   String,
    persons    Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (site_id, funnel, bucket, step_index, channel, campaign)
TTL bucket + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_stage_hour TO $db.agg_stage_hour AS
SELECT toStartOfHour(entered_at) AS bucket, site_id, funnel, step_index,
       entry_channel AS channel, entry_campaign AS campaign, sum(sign) AS persons
FROM $db.stage_reached
GROUP BY bucket, site_id, funnel, step_index, channel, campaign;

CREATE TABLE IF NOT EXISTS $db.agg_stage_day
(
    bucket     Date,
    site_id    LowCardinality(String),
    funnel     LowCardinality(String),
    step_index UInt8,
    channel    LowCardinality(String),
    campaign   String,
    persons    Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (site_id, funnel, bucket, step_index, channel, campaign);

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_stage_day TO $db.agg_stage_day AS
SELECT toDate(entered_at) AS bucket, site_id, funnel, step_index,
       entry_channel AS channel, entry_campaign AS campaign, sum(sign) AS persons
FROM $db.stage_reached
GROUP BY bucket, site_id, funnel, step_index, channel, campaign;

-- Events per minute by type, channel and campaign: counts and unique persons (the live view,
-- impressions and clicks of the channels report). Events land exactly once, so count() is exact.
-- Bot traffic is counted like the stream counts it (flagged in events.is_bot, not dropped).
CREATE TABLE IF NOT EXISTS $db.agg_events_minute
(
    bucket     DateTime('UTC'),
    site_id    LowCardinality(String),
    event_type LowCardinality(String),
    channel    LowCardinality(String),
    campaign   String,
    events     SimpleAggregateFunction(sum, UInt64),
    revenue    SimpleAggregateFunction(sum, Decimal(38, 4)),
    persons    AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (site_id, bucket, event_type, channel, campaign);

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_events_minute TO $db.agg_events_minute AS
SELECT toStartOfMinute(occurred_at) AS bucket, site_id, event_type, channel, campaign,
       count() AS events, sum(toDecimal128(revenue, 4)) AS revenue, uniqState(person_id) AS persons
FROM $db.events
GROUP BY bucket, site_id, event_type, channel, campaign;

-- Attribution sums per day: credits (the number of conversions a channel is credited with)
-- and revenue credits, per model and conversion type. Corrections are negated rows, so sums
-- stay exact.
CREATE TABLE IF NOT EXISTS $db.agg_attribution_day
(
    bucket          Date,
    site_id         LowCardinality(String),
    model           LowCardinality(String),
    conversion_type LowCardinality(String),
    channel         LowCardinality(String),
    campaign        String,
    credit          Float64,
    revenue_credit  Decimal(38, 4)
)
ENGINE = SummingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (site_id, model, bucket, conversion_type, channel, campaign);

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_attribution_day TO $db.agg_attribution_day AS
SELECT toDate(converted_at) AS bucket, site_id, model, conversion_type, channel, campaign,
       sum(credit) AS credit, sum(toDecimal128(revenue_credit, 4)) AS revenue_credit
FROM $db.attributions
GROUP BY bucket, site_id, model, conversion_type, channel, campaign;

-- Spend per day, channel and campaign is small and read directly from `spend`
-- (ReplacingMergeTree: loading the same day, channel and campaign again replaces it).
