"""Storage-usage monitoring: stored bytes per service and day, from ClickHouse's system tables and the
rows themselves, rule statistics, and a budget alert.

    python -m examples.storage_monitoring --budget-mb-per-day 500          # table; exit 1 on alert
    python -m examples.storage_monitoring --budget-mb-per-day 500 --json   # for a cron job / alerting

It reads through `hindsight`'s own settings and read-only SQL path, so it works on chDB (through the
running sink's query API) and on a ClickHouse server alike.

Bytes on disk are known per part (system.parts) and parts are per day (the table is partitioned by
day), not per service; so each day's on-disk bytes are shared out over the services in proportion to
their uncompressed body bytes that day.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Sql = Callable[[str], list[dict[str, Any]]]

PER_SERVICE_DAY = """
SELECT toString(toDate(Timestamp)) AS day, ServiceName AS service, count() AS lines,
       sum(length(Body)) AS body_bytes
FROM {db}.logs
WHERE Timestamp >= now() - INTERVAL {days} DAY
GROUP BY day, service ORDER BY day, service
"""
ON_DISK_PER_DAY = """
SELECT partition AS day, sum(bytes_on_disk) AS disk_bytes, sum(data_uncompressed_bytes) AS raw_bytes
FROM system.parts
WHERE database = '{db}' AND table = 'logs' AND active
GROUP BY day ORDER BY day
"""
RULES = """
SELECT RuleId AS rule, sum(Matches) AS matches, sum(LinesEmitted) AS lines_kept,
       sum(BytesEmitted) AS bytes_kept
FROM {db}.rule_stats
WHERE WindowStart >= now() - INTERVAL {days} DAY
GROUP BY rule ORDER BY bytes_kept DESC
"""


@dataclass
class Usage:
    day: str
    service: str
    lines: int
    body_bytes: int
    disk_bytes: int


@dataclass
class Report:
    usage: list[Usage]
    rules: list[dict[str, Any]]
    budget_bytes_per_day: int
    alerts: list[str]


def collect(sql: Sql, database: str = "hindsight", days: int = 7, budget_bytes_per_day: int = 0) -> Report:
    """Usage per service and day, rule statistics, and the (service, day) pairs over budget."""
    rows = sql(PER_SERVICE_DAY.format(db=database, days=int(days)))
    disk = {str(r["day"]): int(r["disk_bytes"]) for r in sql(ON_DISK_PER_DAY.format(db=database))}
    body_per_day: dict[str, int] = {}
    for r in rows:
        body_per_day[r["day"]] = body_per_day.get(r["day"], 0) + int(r["body_bytes"])
    usage = []
    for r in rows:
        day_body = body_per_day[r["day"]] or 1
        share = disk.get(r["day"].replace("-", ""), disk.get(r["day"], 0)) * int(r["body_bytes"]) // day_body
        usage.append(Usage(r["day"], r["service"], int(r["lines"]), int(r["body_bytes"]), share))
    rules = sql(RULES.format(db=database, days=int(days)))
    alerts = []
    if budget_bytes_per_day > 0:
        for u in usage:
            if u.disk_bytes > budget_bytes_per_day:
                alerts.append(
                    f"{u.service} stored {u.disk_bytes:,} bytes on {u.day}, over the budget of "
                    f"{budget_bytes_per_day:,} bytes per day"
                )
    return Report(usage, rules, budget_bytes_per_day, alerts)


def render(report: Report) -> str:
    out = [f"{'day':<10}  {'service':<24} {'lines':>10} {'body bytes':>14} {'on disk':>12}"]
    for u in report.usage:
        out.append(f"{u.day:<10}  {u.service:<24} {u.lines:>10,} {u.body_bytes:>14,} {u.disk_bytes:>12,}")
    if report.rules:
        out.append("")
        out.append(f"{'rule':<32} {'matches':>10} {'lines kept':>12} {'bytes kept':>14}")
        for r in report.rules:
            counts = f"{int(r['matches']):>10,} {int(r['lines_kept']):>12,} {int(r['bytes_kept']):>14,}"
            out.append(f"{r['rule']:<32} {counts}")
    out.extend(f"ALERT: {a}" for a in report.alerts)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from pipeline.settings import Settings
    from pipeline.store.client import sql_query

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="How many days back.")
    parser.add_argument(
        "--budget-mb-per-day", type=float, default=0, help="Alert above this per service and day."
    )
    parser.add_argument("--json", action="store_true", help="Machine-readable output.")
    args = parser.parse_args(argv)
    settings = Settings()
    report = collect(
        lambda text: sql_query(settings, text, 100_000),
        settings.clickhouse_database,
        args.days,
        int(args.budget_mb_per_day * 1_048_576),
    )
    if args.json:
        print(json.dumps({**asdict(report)}, default=str, indent=2))
    else:
        print(render(report))
    return 1 if report.alerts else 0


if __name__ == "__main__":
    sys.exit(main())
