-- Per-rule statistics from the worker (logs.stats, kind "rule"): matches and what was kept, per window.
-- Each worker writes its partitions' part of a window; sum the parts when reading.
CREATE TABLE IF NOT EXISTS {db}.rule_stats
(
    WindowStart   DateTime64(6),
    WindowEnd     DateTime64(6),
    RuleId        LowCardinality(String),
    RawPartition  UInt32,
    Matches       UInt64,
    MatchedBytes  UInt64,
    LinesEmitted  UInt64,
    BytesEmitted  UInt64,
    InsertedAt    DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(InsertedAt)
PARTITION BY toDate(WindowStart)
ORDER BY (RuleId, WindowStart, RawPartition)
TTL toDateTime(WindowStart) + toIntervalDay(90);
