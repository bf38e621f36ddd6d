-- hindsight.logs: one row per kept raw line. Column names follow the OpenTelemetry ClickHouse
-- exporter's otel_logs table, so OTel-aware tools (Grafana's ClickHouse data source) read it as is.
-- Deduplication: ReplacingMergeTree keyed on the raw line's id (topic, partition, offset, index);
-- the sorting key starts with columns that are fixed for a given raw line, so the same line always
-- lands on the same key. Read with FINAL (or GROUP BY the id) to see each line once.
CREATE TABLE IF NOT EXISTS {db}.logs
(
    Timestamp          DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime      DateTime DEFAULT toDateTime(Timestamp),
    ObservedTimestamp  DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId            String CODEC(ZSTD(1)),
    SpanId             String CODEC(ZSTD(1)),
    TraceFlags         UInt8,
    SeverityText       LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber     UInt8,
    ServiceName        LowCardinality(String) CODEC(ZSTD(1)),
    Body               String CODEC(ZSTD(1)),
    ResourceSchemaUrl  LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl     LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName          String CODEC(ZSTD(1)),
    ScopeVersion       LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes      Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    SessionId          String CODEC(ZSTD(1)),
    UserId             String CODEC(ZSTD(1)),
    Endpoint           LowCardinality(String) CODEC(ZSTD(1)),
    TransactionId      String CODEC(ZSTD(1)),
    LatencyMs          Nullable(Float64),
    StatusCode         Nullable(Int32),
    SecurityFlags      Array(LowCardinality(String)),
    TriggerReasons     Array(LowCardinality(String)),
    TriggerId          String CODEC(ZSTD(1)),
    TriggerOffset      Nullable(Int64),
    RuleIds            Array(String),
    Tags               Array(String),
    RetentionDays      UInt16 DEFAULT 30,
    RawTopic           LowCardinality(String),
    RawPartition       UInt32,
    RawOffset          UInt64,
    RawIndex           UInt32,
    InsertedAt         DateTime64(3) DEFAULT now64(3),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_session_id SessionId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id UserId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_transaction_id TransactionId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = ReplacingMergeTree(InsertedAt)
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, TimestampTime, RawTopic, RawPartition, RawOffset, RawIndex)
TTL toDateTime(Timestamp) + toIntervalDay(RetentionDays)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 0
