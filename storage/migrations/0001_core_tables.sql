-- The contract tables of DESIGN §9. `$db` is the configured database.
-- Times are DateTime64(3, 'UTC'). MergeTree tables keep a deduplication window so that a
-- replayed insert carrying the same insert_deduplication_token lands once.

CREATE TABLE IF NOT EXISTS $db.events
(
    event_id      String,
    site_id       LowCardinality(String),
    event_type    LowCardinality(String),
    occurred_at   DateTime64(3, 'UTC'),
    received_at   DateTime64(3, 'UTC'),
    anonymous_id  String,
    customer_id   String,
    person_id     String,
    seq           Nullable(UInt64),
    channel       LowCardinality(String),
    source        LowCardinality(String),
    medium        LowCardinality(String),
    campaign      String,
    term          String,
    content       String,
    referrer_host LowCardinality(String),
    url           String,
    order_id      String,
    revenue       Decimal(18, 4),
    currency      LowCardinality(String),
    manager_id    String,
    lead_intent   LowCardinality(String),
    properties    Map(String, String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (site_id, person_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.stage_reached
(
    site_id     LowCardinality(String),
    person_id   String,
    funnel      LowCardinality(String),
    step        LowCardinality(String),
    step_index  UInt8,
    reached_at  DateTime64(3, 'UTC'),
    entered_at  DateTime64(3, 'UTC'),
    channel     LowCardinality(String),
    campaign    String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(reached_at)
ORDER BY (site_id, funnel, step_index, reached_at, person_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.attributions
(
    conversion_id   String,
    site_id         LowCardinality(String),
    person_id       String,
    conversion_type LowCardinality(String),
    converted_at    DateTime64(3, 'UTC'),
    model           LowCardinality(String),
    channel         LowCardinality(String),
    campaign        String,
    credit          Float64,
    revenue_credit  Decimal(18, 4)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(converted_at)
ORDER BY (site_id, model, converted_at, conversion_id, channel)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.persons
(
    site_id          LowCardinality(String),
    person_id        String,
    first_seen       DateTime64(3, 'UTC'),
    last_seen        DateTime64(3, 'UTC'),
    first_channel    LowCardinality(String),
    last_channel     LowCardinality(String),
    lead_temperature LowCardinality(String),
    payments         UInt32,
    revenue          Decimal(18, 4),
    funnel_levels    Map(String, UInt8),
    funnel_status    Map(String, String),
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (site_id, person_id);

CREATE TABLE IF NOT EXISTS $db.spend
(
    date     Date,
    site_id  LowCardinality(String),
    channel  LowCardinality(String),
    campaign String,
    cost     Decimal(18, 4),
    currency LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, date, channel, campaign);

CREATE TABLE IF NOT EXISTS $db.rejected_events
(
    received_at DateTime64(3, 'UTC'),
    site_id     LowCardinality(String),
    reason      String,
    payload     String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (site_id, received_at)
TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;
