"""Rules and support captures on the real broker: HTTP API -> rules topic -> running worker -> curated."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer
from pydantic import SecretStr

from pipeline.api.control import ControlServer
from pipeline.kafka import ensure_topics
from pipeline.ops.demo import Child, start_child
from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.wire.curated import decode_curated
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"


class Curated:
    """Follows logs.curated from its start; `until` polls until a predicate over all rows holds."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([settings.curated_topic])
        self.rows: list[dict[str, Any]] = []

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                self.rows.extend(decode_curated(msg.value()))  # type: ignore[arg-type]

    def find(self, pred: Any, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.2)
            hits = [r for r in self.rows if pred(r)]
            if hits:
                return hits
        return []


def line(service: str, message: str, level: str = "DEBUG", **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": time.time_ns() // 1000,
        "service": service,
        "level": level,
        "message": message,
        "session_id": extra.pop("session_id", f"s-{uuid.uuid4().hex[:6]}"),
        **extra,
    }


def call(
    settings: Settings, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{settings.api_port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def control(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running worker and the rules API on one namespace."""
    run = uuid.uuid4().hex[:8]
    settings = kafka.namespaced(
        f"r{run}",
        partitions=2,
        publish_linger_ms=20,
        api_port=free_port(),
        api_token=SecretStr(TOKEN),
        follow_s=2,
    )
    ensure_topics(settings)
    logs = tmp_path_factory.mktemp("logs")
    worker: Child = start_child("worker", ["--log-level", "INFO", "worker"], settings, logs)
    ingest: Child = start_child("ingest", ["--log-level", "INFO", "ingest"], settings, logs)
    server = None
    try:
        server = ControlServer(settings).start()
        pub = Publisher(settings)
        curated = Curated(settings)
        probe = f"ready-{run}"
        pub.publish_obj(line("warmup", probe, level="WARN"))
        pub.flush(10)
        if not curated.find(lambda r: r["message"] == probe, 90):
            worker.check()
            ingest.check()
            raise AssertionError("worker did not forward a WARN line within 90 s")
        yield settings
    finally:
        if server is not None:
            server.stop()
        ingest.stop()
        worker.stop()


def test_api_rejects_missing_or_wrong_token_and_invalid_rules(control: Settings) -> None:
    rule = {"id": "r1", "actions": {"level": "DEBUG"}}
    assert call(control, "PUT", "/rules/r1", rule, token=None)[0] == 401
    assert call(control, "PUT", "/rules/r1", rule, token="wrong")[0] == 401
    assert call(control, "GET", "/rules", token="Bearer")[0] == 401
    status, body = call(control, "PUT", "/rules/r2", {"id": "r2", "match": {"all": [{"level_gte": "LOUD"}]},
                                                     "actions": {"level": "DEBUG"}})  # fmt: skip
    assert status == 400 and [e["path"] for e in body["errors"]] == ["match.all.0.level_gte"]
    status, body = call(control, "PUT", "/rules/r3", b"{not json")
    assert status == 400 and body["errors"][0]["path"] == "(body)"
    status, body = call(control, "POST", "/rules:validate", {"id": "ok", "actions": {"stats": True}})
    assert status == 200 and body["valid"] is True
    assert call(control, "GET", "/rules/r2")[0] == 404  # nothing invalid reached the topic
    assert call(control, "GET", "/health", token=None)[0] == 200


def test_rule_put_over_http_takes_effect_on_the_running_worker_within_5s(control: Settings) -> None:
    pub = Publisher(control)
    curated = Curated(control)
    service = f"checkout-{uuid.uuid4().hex[:6]}"
    pub.publish_obj(line(service, "before the rule"))
    pub.flush(10)
    # rules act on lines as the worker processes them: the line goes through ingest and the worker first
    wait_processed(control)
    rule = {"id": f"debug-{service}", "priority": 5, "match": {"all": [{"service": service}]},
            "actions": {"level": "DEBUG", "tag": {"tags": ["debugging"]}}}  # fmt: skip
    status, stored = call(control, "PUT", f"/rules/{rule['id']}", rule)
    put_at = time.monotonic()
    assert status == 200 and stored["id"] == rule["id"]
    assert call(control, "GET", f"/rules/{rule['id']}")[1]["actions"]["level"] == "DEBUG"
    sent: dict[str, float] = {}
    found: list[dict[str, Any]] = []
    for i in range(60):
        message = f"probe-{i}"
        sent[message] = time.monotonic()
        pub.publish_obj(line(service, message))
        pub.flush(5)
        found = curated.find(lambda r: r["service"] == service and r["message"].startswith("probe-"), 0.25)
        if found:
            break
    assert found, "the rule never took effect"
    first = min(found, key=lambda r: sent[r["message"]])
    assert sent[first["message"]] - put_at <= 5.0
    assert first["tags"] == ["debugging"] and first["rule_ids"] == [rule["id"]]
    assert first["trigger_reasons"] == [f"rule:{rule['id']}"]
    assert not [r for r in curated.rows if r["message"] == "before the rule"]
    assert call(control, "DELETE", f"/rules/{rule['id']}")[0] == 204
    assert call(control, "GET", f"/rules/{rule['id']}")[0] == 404


def test_support_capture_returns_earlier_lines_and_follows(control: Settings) -> None:
    pub = Publisher(control)
    curated = Curated(control)
    user = f"user-{uuid.uuid4().hex[:6]}"
    earlier = [f"{user} earlier {i}" for i in range(5)]
    for message in earlier:
        pub.publish_obj(line("shop", message, user_id=user))
    pub.publish_obj(line("shop", "someone else", user_id="other"))
    assert pub.flush(10) == 0  # in logs.raw, where the capture's history is read
    status, capture = call(control, "POST", "/captures", {"user_id": user, "lookback": "10m", "follow": "1m"})
    assert status == 201 and capture["history_lines"] == 5
    capture_id = capture["capture_id"]
    later = [f"{user} later {i}" for i in range(3)]
    deadline = time.monotonic() + 20
    got: set[str] = set()
    while time.monotonic() < deadline and got != set(earlier + later):
        for message in later:
            if message not in got:
                pub.publish_obj(line("shop", message, user_id=user))
        pub.flush(5)
        curated.poll(1.0)
        got = {r["message"] for r in curated.rows if capture_id in r["tags"]}
    assert got == set(earlier + later)
    assert all(capture_id in r["rule_ids"] for r in curated.rows if capture_id in r["tags"])
    assert "someone else" not in {r["message"] for r in curated.rows}
    status, body = call(control, "POST", "/captures", {"user_id": "", "follow": "soon"})
    assert status == 400 and {e["path"] for e in body["errors"]} == {"user_id", "follow"}


def test_rules_cli_validate_add_list_rm(control: Settings, tmp_path: Any) -> None:
    env = {**settings_env(control), "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.ops.cli", "rules", *args], capture_output=True,
                              text=True, env=env, timeout=120, cwd=REPO)  # fmt: skip

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": "x", "match": {"all": [{"endpoint": {"regex": "("}}]}, "actions": {}}))
    out = cli("validate", str(bad))
    assert out.returncode == 1
    assert "match.all.0.endpoint.regex" in out.stderr and "actions: give at least one action" in out.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"id": "cli-rule", "priority": 3, "actions": {"stats": True}}))
    assert cli("add", str(good)).returncode == 0
    listed = json.loads(cli("list", "--json").stdout)
    assert "cli-rule" in {r["id"] for r in listed}
    assert cli("rm", "cli-rule").returncode == 0
    assert "cli-rule" not in {r["id"] for r in json.loads(cli("list", "--json").stdout)}
    # an unknown id is an error, not "deleted"; add without a file does not wait on stdin
    out = cli("rm", "cli-rule")
    assert out.returncode == 1 and "no rule 'cli-rule'" in out.stderr
    out = cli("add")
    assert out.returncode == 1 and "a rule file, or - to read it from stdin" in out.stderr
    # field names the README's readers guess get the allowed ones listed
    guessed = tmp_path / "guessed.json"
    guessed.write_text(json.dumps({"id": "g", "actions": {"capture": {"lookback": 60, "follow": 30}}}))
    out = cli("validate", str(guessed))
    assert out.returncode == 1
    assert "actions.capture.lookback: unknown field; allowed here: follow_s, lookback_s, scope" in out.stderr
    # a rule whose time window ended is listed as expired, not on
    ended = tmp_path / "ended.json"
    ended.write_text(
        json.dumps({"id": "ended", "active_until": "2020-01-01T00:00:00+00:00", "actions": {"stats": True}})
    )
    assert cli("add", str(ended)).returncode == 0
    [row] = [ln for ln in cli("list").stdout.splitlines() if " ended " in f"{ln} "]
    assert row.split()[1] == "expired"


def test_dry_run_reports_what_a_rule_would_match_in_raw_history(control: Settings) -> None:
    pub = Publisher(control)
    service = f"dry-{uuid.uuid4().hex[:6]}"
    for i in range(12):
        pub.publish_obj(
            line(service, f"call {i}", session_id=f"s{i % 3}", endpoint="/pay" if i % 2 else "/cart")
        )
    pub.publish_obj(line("elsewhere", "not this one", endpoint="/pay"))
    pub.flush(10)
    rule = {
        "id": "pay-only",
        "match": {"all": [{"service": service, "endpoint": "/pay"}]},
        "actions": {"stats": True},
    }
    report = control_dry_run(control, rule)
    assert report["matched_lines"] == 6 and report["matched_sessions"] == 3
    assert report["scanned_lines"] >= 13 and report["matched_bytes"] > 6 * len("call 1")


def control_dry_run(settings: Settings, rule: dict[str, Any]) -> dict[str, Any]:
    from pipeline.control.rules import dry_run

    return dry_run(settings, rule, since_s=3600)


def test_invalid_record_in_the_rules_topic_is_dead_lettered_with_its_reason(control: Settings) -> None:
    from confluent_kafka import Producer

    from tests.integration.helpers import consume_all

    producer = Producer(control.kafka_client_config())
    producer.produce(control.rules_topic, key=b"junk", value=b'{"id": "junk", "actions": {"level": "LOUD"}}')
    # a pattern the linear-time engine cannot run, written by another producer past the API
    backref = {"id": "backref", "match": {"all": [{"message_regex": "(a)\\1"}]}, "actions": {"drop": True}}
    producer.produce(control.rules_topic, key=b"backref", value=json.dumps(backref).encode())
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 30
    letters: dict[bytes, Any] = {}
    while time.monotonic() < deadline and len(letters) < 2:
        letters = {
            m.key(): m
            for m in consume_all(control, control.dlq_topic, 2, timeout=2)
            if m.key() in (b"junk", b"backref")
        }
    assert set(letters) == {b"junk", b"backref"}, "the worker did not dead-letter the invalid rules"
    headers = {k: v.decode() for k, v in letters[b"junk"].headers() or []}
    assert headers["hindsight.error_type"] == "invalid_rule"
    assert headers["hindsight.source_topic"] == control.rules_topic
    assert "actions.level" in headers["hindsight.reason"]
    backref_reason = {k: v.decode() for k, v in letters[b"backref"].headers() or []}["hindsight.reason"]
    assert "RE2" in backref_reason and "message_regex" in backref_reason
    assert call(control, "GET", "/rules/junk")[0] == 404
    # the API refuses it with the reason, before it reaches the topic
    status, body = call(control, "PUT", "/rules/backref", backref)
    assert status == 400 and "RE2" in json.dumps(body), body


def wait_processed(settings: Settings, timeout_s: float = 60.0) -> None:
    """Until ingest has passed everything in logs.raw on and the worker has committed all of it."""
    from confluent_kafka import TopicPartition

    def caught_up(group: str, topic: str) -> bool:
        consumer = Consumer({**settings.kafka_client_config(), "group.id": group})
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        try:
            end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
            done = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
        finally:
            consumer.close()
        return done >= end

    deadline = time.monotonic() + timeout_s
    stages = ((settings.ingest_group, settings.raw_topic), (settings.app_id, settings.sessions_topic))
    for group, topic in stages:
        while not caught_up(group, topic):
            assert time.monotonic() < deadline, f"{group} did not catch up on {topic} in {timeout_s:.0f} s"
            time.sleep(0.2)
