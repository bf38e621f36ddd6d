-- hindsight.otel_logs: the OpenTelemetry ClickHouse exporter's table as a view of hindsight.logs, each
-- line once (FINAL merges the rows of one raw line), with the exporter's columns only, so queries and
-- dashboards written for the exporter's otel_logs run unchanged against it.
CREATE VIEW IF NOT EXISTS {db}.otel_logs AS
SELECT Timestamp, TimestampTime, TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber, ServiceName,
       Body, ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion,
       ScopeAttributes, LogAttributes
FROM {db}.logs FINAL
SETTINGS do_not_merge_across_partitions_select_final = 1
