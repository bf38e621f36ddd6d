-- Window statistics from the worker (logs.stats). Each worker emits its partitions' part of a window;
-- parts are merged when read (sum counts, merge the latency sketches' buckets with sumMap).
CREATE TABLE IF NOT EXISTS {db}.endpoint_stats
(
    WindowStart   DateTime64(6),
    WindowEnd     DateTime64(6),
    Endpoint      LowCardinality(String),
    RawPartition  UInt32,
    Count         UInt64,
    Errors        UInt64,
    Bytes         UInt64,
    P50Ms         Nullable(Float64),
    P95Ms         Nullable(Float64),
    P99Ms         Nullable(Float64),
    LatencyCount  UInt64,
    Sketch        Map(String, UInt64),
    FirstOffset   Int64,
    LastOffset    Int64,
    InsertedAt    DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(InsertedAt)
PARTITION BY toDate(WindowStart)
ORDER BY (Endpoint, WindowStart, RawPartition)
TTL toDateTime(WindowStart) + toIntervalDay(90);

CREATE TABLE IF NOT EXISTS {db}.slow_sessions
(
    WindowStart   DateTime64(6),
    WindowEnd     DateTime64(6),
    SessionId     String,
    RawPartition  UInt32,
    Rank          UInt16,
    Count         UInt64,
    Errors        UInt64,
    Bytes         UInt64,
    P50Ms         Nullable(Float64),
    P95Ms         Nullable(Float64),
    P99Ms         Nullable(Float64),
    FirstOffset   Int64,
    LastOffset    Int64,
    InsertedAt    DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(InsertedAt)
PARTITION BY toDate(WindowStart)
ORDER BY (WindowStart, RawPartition, SessionId)
TTL toDateTime(WindowStart) + toIntervalDay(90)
