-- Log templates (pipeline/engine/templates.py): each kept line's template id, and the catalog of
-- templates the workers saw. Workers send count deltas (logs.stats, kind "template"); the table sums
-- them per service, scope (the endpoint when templates are new per endpoint, else '') and template.
-- Read it grouped: min(FirstSeen), max(LastSeen), sum(Count), sumMap(Levels), max(Template).
ALTER TABLE {db}.logs ADD COLUMN IF NOT EXISTS TemplateId LowCardinality(String) DEFAULT '';

CREATE TABLE IF NOT EXISTS {db}.templates
(
    ServiceName  LowCardinality(String),
    Scope        String,
    TemplateId   String,
    Template     SimpleAggregateFunction(max, String),
    Example      SimpleAggregateFunction(max, String),
    FirstSeen    SimpleAggregateFunction(min, DateTime64(6)),
    LastSeen     SimpleAggregateFunction(max, DateTime64(6)),
    Count        SimpleAggregateFunction(sum, UInt64),
    Levels       SimpleAggregateFunction(sumMap, Map(String, UInt64)),
    Triggered    SimpleAggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY (ServiceName, Scope, TemplateId)
TTL toDateTime(LastSeen) + toIntervalDay(90)
