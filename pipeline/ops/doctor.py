"""`hindsight doctor`: configuration, broker, topics, consumer groups, store and HTTP services, one
line per check with a fix hint. Each check has a short timeout; a failure never stops the others."""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined,unused-ignore]  # typed from 2.13

from pipeline import compiled, engine
from pipeline.errors import HindsightError
from pipeline.kafka import admin, group_lag, topic_specs, wait_for_broker
from pipeline.settings import Settings
from pipeline.store.client import query_api, remote_summary

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(settings: Settings, timeout_s: float = 3.0) -> list[Check]:
    """Every check, in dependency order: later ones are skipped when the broker is unreachable."""
    checks = [_config(settings), _engine(), _fast_paths()]
    broker = _guard("broker", lambda: _broker(settings, timeout_s))
    checks.append(broker)
    if broker.status == FAIL:
        for name in ("topics", "ingest group", "worker group", "sink group"):
            checks.append(Check(name, SKIP, "broker unreachable"))
    else:
        checks.append(_guard("topics", lambda: _topics(settings, timeout_s)))
        checks.append(
            _guard("ingest group", lambda: _lag(settings, "ingest group", settings.ingest_group, timeout_s))
        )
        checks.append(
            _guard("worker group", lambda: _lag(settings, "worker group", settings.app_id, timeout_s))
        )
        sink_group = f"{settings.sink_group}-clickhouse"
        checks.append(_guard("sink group", lambda: _lag(settings, "sink group", sink_group, timeout_s)))
    checks.append(_guard("store", lambda: _store(settings, timeout_s)))
    checks.append(_guard("query API", lambda: _query_api(settings, timeout_s)))
    checks.append(
        _guard(
            "rules API", lambda: _http("rules API", settings.api_host, settings.api_port, timeout_s, "api")
        )
    )
    checks.append(_guard("metrics", lambda: _metrics(settings, timeout_s)))
    return checks


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a check that breaks is itself a finding, never a crash of the doctor
        return Check(name, FAIL, f"{type(exc).__name__}: {str(exc)[:200]}", "see the message above")


def _engine() -> Check:
    """Which form of the window engine this installation runs (pipeline/__init__.py decides)."""
    state = engine.NATIVE
    if state == "compiled":
        return Check("window engine", OK, "compiled with mypyc")
    if state == "stale":
        return Check(
            "window engine",
            WARN,
            "its compiled build is older than the source; the source runs",
            "make native",
        )
    reason = "HINDSIGHT_NATIVE=0" if state == "disabled" else "not compiled"
    return Check("window engine", OK, f"source ({reason}; `make native` compiles it, ~1.2-1.5x faster)")


def _fast_paths() -> Check:
    """Which of the C hot loops (pipeline/compiled.py) run; their Python forms run otherwise."""
    states = {name.rsplit(".", 1)[1]: compiled.state(name) for name in compiled.SOURCES}
    detail = ", ".join(f"{name} {how}" for name, how in states.items())
    if "stale" in states.values():
        return Check(
            "C fast paths", WARN, f"{detail}: a stale build is not used, its Python runs", "make native"
        )
    if set(states.values()) == {"compiled"}:
        return Check("C fast paths", OK, detail)
    built = "`make native` builds them: ingest routes a single-line message in ~2.6 us, ~3.6 in Python"
    return Check("C fast paths", OK, f"{detail} ({built})")


def _config(settings: Settings) -> Check:
    problems = []
    for key in ("clickhouse_ca_cert", "clickhouse_client_cert", "clickhouse_client_key"):
        path = getattr(settings, key)
        if path is not None and not path.is_file():
            problems.append(f"HINDSIGHT_{key.upper()}={path} does not exist")
    if settings.api_token is None:
        problems.append(
            "HINDSIGHT_API_TOKEN unset: `hindsight api` and `hindsight otlp` will refuse to start"
        )
    store = "ClickHouse server" if settings.uses_server else f"chDB at {settings.store_path}"
    detail = f"broker {settings.bootstrap}, store {store}"
    if problems:
        return Check("config", WARN, f"{detail}; " + "; ".join(problems), "set the variables named")
    return Check("config", OK, detail)


def _broker(settings: Settings, timeout_s: float) -> Check:
    try:
        wait_for_broker(settings, timeout_s)
    except HindsightError as exc:
        return Check(
            "broker",
            FAIL,
            str(exc),
            "start one with `hindsight stack up` or point KAFKA_BOOTSTRAP_SERVERS at your cluster",
        )
    meta = admin(settings, quiet=True).list_topics(timeout=timeout_s)
    return Check("broker", OK, f"{settings.bootstrap}: {len(meta.brokers)} broker(s)")


def _topics(settings: Settings, timeout_s: float) -> Check:
    client = admin(settings, quiet=True)
    meta = client.list_topics(timeout=timeout_s).topics
    specs = topic_specs(settings)
    missing = [s.name for s in specs if s.name not in meta]
    if missing:
        return Check("topics", FAIL, f"missing: {', '.join(missing)}", "run `hindsight topics`")
    problems = []
    for spec in specs:
        if len(meta[spec.name].partitions) < spec.partitions:
            problems.append(
                f"{spec.name} has {len(meta[spec.name].partitions)} partitions, want {spec.partitions}"
            )
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in specs]
    for resource, future in client.describe_configs(resources, request_timeout=timeout_s).items():
        have = {k: v.value for k, v in future.result().items()}
        want = next(s for s in specs if s.name == resource.name).config
        policy = want.get("cleanup.policy")
        if policy and have.get("cleanup.policy") != policy:
            problems.append(f"{resource.name} cleanup.policy={have.get('cleanup.policy')}, want {policy}")
    raw_ms = int(
        client.describe_configs([ConfigResource(ResourceType.TOPIC, settings.raw_topic)])[
            ConfigResource(ResourceType.TOPIC, settings.raw_topic)
        ]
        .result()["retention.ms"]
        .value
    )
    detail = f"{len(specs)} topics; {settings.raw_topic} keeps {raw_ms / 3_600_000:.0f} h for replay"
    if problems:
        return Check("topics", WARN, f"{detail}; " + "; ".join(problems), "fix the topic configs named")
    return Check("topics", OK, detail)


# what each group reads, and the command that runs it
_GROUPS: dict[str, tuple[Callable[[Settings], str], str]] = {
    "ingest group": (lambda s: s.raw_topic, "hindsight ingest"),
    "worker group": (lambda s: s.sessions_topic, "hindsight worker"),
    "sink group": (lambda s: s.curated_topic, "hindsight sink clickhouse"),
}


def _lag(settings: Settings, name: str, group: str, timeout_s: float) -> Check:
    topic_of, command = _GROUPS[name]
    topic = topic_of(settings)
    client = admin(settings, quiet=True)
    described = client.describe_consumer_groups([group], request_timeout=timeout_s)[group].result()
    members = len(described.members)
    try:
        lag = sum(group_lag(settings, group, topic, timeout_s).values())
    except KafkaException as exc:
        return Check(name, WARN, f"{group}: lag unknown ({exc})", "check the broker's logs")
    detail = f"{group}: {members} member(s), lag {lag} message(s) on {topic}"
    if members == 0:
        return Check(name, WARN, detail, f"start `{command}`")
    return Check(name, OK, detail)


def _store(settings: Settings, timeout_s: float) -> Check:
    if not settings.uses_server:
        try:
            summary = remote_summary(query_api(settings), timeout_s)
            return Check("store", OK, f"chDB held by a running sink: {summary.get('lines', 0)} lines kept")
        except ConnectionRefusedError:
            pass
    from pipeline.store.clickhouse import open_client

    started = time.monotonic()
    try:
        client = open_client(settings)
    except HindsightError as exc:
        return Check("store", FAIL, str(exc), "check CLICKHOUSE_URL / HINDSIGHT_CLICKHOUSE_* (TLS) settings")
    try:
        db = settings.clickhouse_database
        tables = {
            r[0]
            for r in client.query(
                "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": db}
            ).result_rows
        }
    finally:
        client.close()
    ms = (time.monotonic() - started) * 1000
    if "logs" not in tables:
        return Check(
            "store",
            WARN,
            f"reachable in {ms:.0f} ms; {db}.logs missing",
            "a sink applies migrations on start",
        )
    return Check("store", OK, f"reachable in {ms:.0f} ms; tables: {', '.join(sorted(tables))}")


def _query_api(settings: Settings, timeout_s: float) -> Check:
    try:
        summary = remote_summary(query_api(settings), timeout_s)
    except ConnectionRefusedError:
        return Check(
            "query API",
            WARN,
            f"nothing on {settings.query_url}",
            "it runs inside `hindsight sink clickhouse`",
        )
    except HindsightError as exc:
        return Check("query API", FAIL, str(exc), "set HINDSIGHT_API_TOKEN as the sink has it")
    return Check("query API", OK, f"{settings.query_url}: {summary.get('lines', 0)} lines kept")


def _http(name: str, host: str, port: int, timeout_s: float, command: str) -> Check:
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return Check(name, OK, f"{url} answered {resp.status}")
    except urllib.error.HTTPError as exc:
        return Check(name, FAIL, f"{url} answered {exc.code}", f"check `hindsight {command}`'s log")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(name, WARN, f"nothing on {url} ({reason})", f"start `hindsight {command}` if you use it")


def _metrics(settings: Settings, timeout_s: float) -> Check:
    if settings.metrics_port is None:
        return Check("metrics", SKIP, "HINDSIGHT_METRICS_PORT unset", "set it to serve Prometheus /metrics")
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return Check("metrics", WARN, f"nothing on {url} ({exc})", "start a worker or sink with that port")
    series = sum(1 for line in text.splitlines() if line.startswith("hindsight_"))
    samples = dict(
        line.split(" ", 1) for line in text.splitlines() if line.startswith("hindsight_") and " " in line
    )
    try:
        effective = float(samples.get("hindsight_effective_lookback_seconds", "nan"))
        lookback = float(samples.get("hindsight_lookback_seconds", "nan"))
    except ValueError:
        effective = lookback = float("nan")
    if effective < lookback:  # False for NaN: a sink's metrics have no lookback
        return Check(
            "metrics",
            WARN,
            f"{url}: the worker is evicting buffered sessions: effective lookback {effective:.0f} s "
            f"of {lookback:.0f} s",
            "raise HINDSIGHT_MEMORY_BUDGET_MB (or MAX_SESSIONS), or run more workers",
        )
    if not math.isnan(lookback):
        return Check(
            "metrics", OK, f"{url}: {series} hindsight_* samples; lookback {lookback:.0f} s kept whole"
        )
    return Check("metrics", OK, f"{url}: {series} hindsight_* samples")


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        line = f"{c.status:<4}  {c.name:<{width}}  {c.detail}"
        if c.fix and c.status in (WARN, FAIL):
            line += f"  (fix: {c.fix})"
        lines.append(line)
    return "\n".join(lines)


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.status != FAIL for c in checks), "checks": [c.as_dict() for c in checks]}
