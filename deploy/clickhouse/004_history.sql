-- hindsight.logs keeps every selection of a line (issue: stored history is overwritten). A line
-- emitted again (by a capture, a replay, a rule or a redelivery) is one more row with the same raw
-- id; AggregatingMergeTree merges those rows into one: the reasons, trigger ids, rule ids, tags and
-- routes are unions, Selections keeps each selection whole (which trigger, why, by which rules, for
-- how long), RetentionDays the longest any selection asked for. Columns of the line itself (body,
-- level, attributes...) are the same in every row of one raw id, hence
-- allow_dimensions_outside_sorting_key. Read with FINAL, as before, to see each line once, merged.
-- TriggerId/TriggerOffset: one of the triggers (any); TriggerIds has all of them.
CREATE TABLE IF NOT EXISTS {db}.logs_history
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
    TriggerReasons     SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    TriggerId          SimpleAggregateFunction(any, String) CODEC(ZSTD(1)),
    TriggerOffset      SimpleAggregateFunction(any, Nullable(Int64)),
    TriggerIds         SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    RuleIds            SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    Tags               SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    Routes             SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    Selections         SimpleAggregateFunction(groupUniqArrayArray, Array(Tuple(
                           TriggerId String, Reasons Array(String), RuleIds Array(String),
                           Tags Array(String), Routes Array(String), RetentionDays UInt16))),
    RetentionDays      SimpleAggregateFunction(max, UInt16) DEFAULT 30,
    RawTopic           LowCardinality(String),
    RawPartition       UInt32,
    RawOffset          UInt64,
    RawIndex           UInt32,
    InsertedAt         SimpleAggregateFunction(max, DateTime64(3)) DEFAULT now64(3),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_session_id SessionId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id UserId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_transaction_id TransactionId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, TimestampTime, RawTopic, RawPartition, RawOffset, RawIndex)
TTL toDateTime(Timestamp) + toIntervalDay(RetentionDays)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 0, allow_dimensions_outside_sorting_key = 1;

-- the rows stored so far, each as its one selection
INSERT INTO {db}.logs_history
SELECT Timestamp, TimestampTime, ObservedTimestamp, TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber,
       ServiceName, Body, ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion,
       ScopeAttributes, LogAttributes, SessionId, UserId, Endpoint, TransactionId, LatencyMs, StatusCode,
       SecurityFlags, CAST(TriggerReasons, 'Array(String)'), TriggerId, TriggerOffset,
       if(TriggerId = '', [], [TriggerId]), RuleIds, Tags, [],
       [(TriggerId, CAST(TriggerReasons, 'Array(String)'), RuleIds, Tags, [], RetentionDays)],
       RetentionDays, RawTopic, RawPartition, RawOffset, RawIndex, InsertedAt
FROM {db}.logs FINAL;

RENAME TABLE {db}.logs TO {db}.logs_before_history, {db}.logs_history TO {db}.logs;

DROP TABLE {db}.logs_before_history
