"""Grafana dashboards and the compose stack: every ClickHouse panel's SQL runs on the real engine (chDB)
against the migrated tables, every Prometheus expression names a series the collectors expose, the
provisioning refers to the dashboards' data sources, and docker-compose.yml validates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from connectors.base.metrics import SinkCollector
from connectors.clickhouse import ClickHouseSink
from pipeline.engine.curate import curate
from pipeline.metrics import LagCache
from pipeline.settings import Settings
from pipeline.types import RawLine
from pipeline.wire.records import normalize
from pipeline.worker.metrics import WorkerCollector
from pipeline.worker.processor import RawProcessor
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def targets(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{name}: {panel['title']}", target)
        for name, dash in dashboards().items()
        for panel in dash["panels"]
        for target in panel["targets"]
        if target["datasource"]["type"] == kind
    ]


def grafana_macros(sql: str) -> str:
    """What the ClickHouse data source expands its macros to, for a 1-day range and 60 s steps."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)", r"(\1 >= now() - INTERVAL 1 DAY AND \1 <= now() + INTERVAL 1 HOUR)", sql
    )
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSink]:
    path = tmp_path_factory.mktemp("chdb")
    sink = ClickHouseSink.from_settings(Settings(chdb_path=path, default_retention_days=3650))
    now = normalize({"service": "svc", "level": "INFO", "message": "x"})["timestamp"]
    rows = []
    trigger = None
    for i, level in enumerate(["ERROR", "DEBUG"]):
        record = normalize(
            {"timestamp": now + i, "service": "svc", "level": level, "message": f"m{i}", "endpoint": "/pay",
             "session_id": "s1"}
        )  # fmt: skip
        line = RawLine(record, "logs.raw", 0, i, 0)
        trigger = trigger or line  # one incident: both lines carry the first line's trigger
        rows.append(curate(line, ["error"], trigger, 3650))
    sink.write_batch(rows)
    sink.flush()
    yield sink
    sink.close()


def test_dashboards_parse_with_unique_ids_and_provisioned_sources() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "hindsight.yaml").read_text())
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    assert len(dashboards()) == 2
    for dash in dashboards().values():
        assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
        for panel in dash["panels"]:
            for target in panel["targets"]:
                ds = target["datasource"]
                assert uids[ds["uid"]] == ds["type"]
    assert len({d["uid"] for d in dashboards().values()}) == 2


@pytest.mark.parametrize(("where", "target"), targets("grafana-clickhouse-datasource"))
def test_clickhouse_panel_runs_on_the_migrated_tables(
    store: ClickHouseSink, where: str, target: dict[str, Any]
) -> None:
    # the store analyses the query (tables, columns, functions, types) and names what it returns
    described = store.client.query(f"DESCRIBE TABLE ({grafana_macros(target['rawSql'])})").result_rows
    assert [row[0] for row in described], where


def test_incident_panels_see_the_stored_incident(store: ClickHouseSink) -> None:
    [(_, target)] = [
        t for t in targets("grafana-clickhouse-datasource") if t[0].endswith("Top triggering endpoints")
    ]
    rows = store.client.query(grafana_macros(target["rawSql"])).result_rows
    assert rows and rows[0][0] == "/pay" and rows[0][1] == 1 and rows[0][2] == 2


def exposed_series() -> set[str]:
    from pipeline.rules.compiled import RuleSet
    from pipeline.rules.model import validate_rule

    processor = RawProcessor(Settings())
    tag = {"id": "tag", "match": {"all": [{"service": "s"}]}, "actions": {"tag": {"tags": ["t"]}}}
    mute = {"id": "mute", "match": {"all": [{"endpoint": "/health"}]}, "actions": {"drop": True}}
    processor.set_rules(RuleSet([validate_rule(tag), validate_rule(mute)]))
    line = {"service": "s", "level": "ERROR", "message": "m"}
    processor.handle("logs.raw", 0, 0, orjson.dumps([line, {**line, "endpoint": "/health"}]))
    processor.handle("logs.raw", 0, 1, b"\x07 bad")

    class Runner:
        sink = type("S", (), {"name": "clickhouse"})()
        topic = "logs.curated"
        metrics = __import__("connectors.base.runner", fromlist=["SinkMetrics"]).SinkMetrics()

    Runner.metrics.observe_batch(0.02)
    registry = CollectorRegistry()
    registry.register(WorkerCollector(processor, LagCache("g", "t", lambda: {0: 1})))
    registry.register(SinkCollector([Runner()]))  # type: ignore[list-item]
    text = generate_latest(registry).decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_prometheus_expressions_name_exposed_series() -> None:
    exposed = exposed_series()
    used = set()
    for where, target in targets("prometheus"):
        names = set(re.findall(r"\bhindsight_[a-z_]+\b", target["expr"]))
        assert names, where
        assert names <= exposed, f"{where}: {names - exposed}"
        used |= names
    assert len(used) >= 15


def test_compose_validates_and_prometheus_scrapes_the_metric_ports() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    port = compose["x-hindsight-env"]["HINDSIGHT_METRICS_PORT"]
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"ingest:{port}", f"worker:{port}", f"sink:{port}"}
    assert {"prometheus", "grafana", "otlp", "api", "ingest", "worker", "sink"} <= set(compose["services"])
    for volume in compose["services"]["grafana"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose not installed (scripts/ensure-services.sh installs Debian's)")
    proc = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_new_templates_panel_lists_a_template_first_seen_in_the_range(store: ClickHouseSink) -> None:
    now_us = int(time.time() * 1_000_000)
    stats = store.stats_sink()
    stats.write_batch(
        [
            {"kind": "template", "service": "panel-svc", "endpoint": "", "template_id": "00aa11bb22cc33dd",
             "template": "tls handshake <*> failed", "example": "tls handshake 4 failed",
             "first_us": now_us - 60_000_000, "last_us": now_us, "count": 4, "levels": {"WARN": 4},
             "triggered": True},
        ]
    )  # fmt: skip
    stats.flush()
    [(_, target)] = [t for t in targets("grafana-clickhouse-datasource") if t[0].endswith("New templates")]
    rows = store.client.query(grafana_macros(target["rawSql"])).named_results()
    [row] = [r for r in rows if r["service"] == "panel-svc"]
    assert (row["template"], row["lines"], row["triggered"]) == ("tls handshake <*> failed", 4, 1)
