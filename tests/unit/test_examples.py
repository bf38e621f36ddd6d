"""The examples do what they say: storage per service and day with a budget alert (real engine, chDB),
and an archive copied to an object-store layout with its cost estimated from the measured files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.clickhouse import ClickHouseSink
from examples.archive_cost import estimate, upload
from examples.storage_monitoring import collect, render
from pipeline.engine.curate import curate
from pipeline.replay.archive import hour_dir, read_archive, write_hour
from pipeline.settings import Settings
from pipeline.store.sandbox import run_sql
from pipeline.types import RawLine
from pipeline.wire.records import normalize


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSink]:
    sink = ClickHouseSink.from_settings(
        Settings(chdb_path=tmp_path_factory.mktemp("chdb"), default_retention_days=3650)
    )
    now = int(time.time() * 1_000_000)
    rows = []
    for i in range(30):
        service = "checkout" if i < 20 else "search"
        record = normalize(
            {"timestamp": now + i, "service": service, "level": "WARN", "message": "x" * (100 + i)}
        )
        line = RawLine(record, "logs.raw", 0, i, 0)
        rows.append(curate(line, ["baseline"], None, 3650))
    sink.write_batch(rows)
    sink.flush()
    sink.client.command(
        "INSERT INTO hindsight.rule_stats (WindowStart, WindowEnd, RuleId, RawPartition, Matches,"
        " MatchedBytes, LinesEmitted, BytesEmitted) VALUES (now64(6), now64(6), 'pci', 0, 7, 700, 5, 500)"
    )
    yield sink
    sink.close()


def _sql(sink: ClickHouseSink) -> Any:
    return lambda text: run_sql(sink.reader, text, 100_000)


def test_storage_per_service_and_day_with_budget_alert(store: ClickHouseSink) -> None:
    report = collect(_sql(store), budget_bytes_per_day=0)
    by_service = {u.service: u for u in report.usage}
    assert set(by_service) == {"checkout", "search"}
    assert by_service["checkout"].lines == 20 and by_service["search"].lines == 10
    assert by_service["checkout"].body_bytes == sum(100 + i for i in range(20))
    day_disk = store.client.query(
        "SELECT sum(bytes_on_disk) FROM system.parts"
        " WHERE database = 'hindsight' AND table = 'logs' AND active"
    ).result_rows[0][0]
    shares = [u.disk_bytes for u in report.usage]
    assert 0 < sum(shares) <= day_disk and sum(shares) >= day_disk - len(shares)  # shared out, rounding down
    assert by_service["checkout"].disk_bytes > by_service["search"].disk_bytes
    assert report.rules == [{"rule": "pci", "matches": 7, "lines_kept": 5, "bytes_kept": 500}]
    assert report.alerts == []

    tight = collect(_sql(store), budget_bytes_per_day=by_service["search"].disk_bytes)
    assert len(tight.alerts) == 1 and tight.alerts[0].startswith("checkout stored")
    text = render(tight)
    assert "ALERT: checkout" in text and "pci" in text


def test_archive_upload_and_cost_estimate(tmp_path: Path) -> None:
    root, bucket = tmp_path / "archive", tmp_path / "bucket"
    base = 1_790_000_000_000_000
    for hour in range(2):
        for partition in range(2):
            ts = base + hour * 3_600_000_000
            records = [
                normalize({"timestamp": ts + i, "service": "s", "level": "DEBUG", "message": f"m{i}"})
                for i in range(50)
            ]
            lines = [RawLine(r, "logs.raw", partition, hour * 100 + i, 0) for i, r in enumerate(records)]
            write_hour(hour_dir(root, "logs.raw", ts), partition, lines)
    est = estimate(root, retention_days=365, price_gb_month=0.01, price_per_1000_puts=0.005)
    sizes = sum(p.stat().st_size for p in root.rglob("*.avro"))
    assert (est.files, est.hours, est.bytes) == (4, 2, sizes)
    assert est.bytes_per_day == sizes / 2 * 24
    assert est.steady_state_gb == round(sizes / 2 * 24 * 365 / 1024**3, 6)
    assert est.put_requests_per_month == 4 / 2 * 24 * 30
    assert est.total_usd_per_month == round(est.storage_usd_per_month + est.requests_usd_per_month, 4)

    assert upload(root, f"file://{bucket}") == (4, 0)
    assert upload(root, f"file://{bucket}") == (0, 4)  # idempotent
    copied = list(read_archive(bucket, "logs.raw", base, base + 2 * 3_600_000_000))
    assert len(copied) == 200 and {ln.partition for ln in copied} == {0, 1}
    with pytest.raises(SystemExit, match="unsupported"):
        upload(root, "ftp://nope")
