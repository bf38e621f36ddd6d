"""Rule administration: validate, add, list, remove and dry-run rules (for the CLI and the rules API)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.errors import BrokerUnavailable
from pipeline.replay.rawscan import scan_raw
from pipeline.rules.compiled import compile_rule
from pipeline.rules.model import Rule, RuleError, validate_rule
from pipeline.rules.store import RuleReader, RuleStore
from pipeline.settings import Settings
from pipeline.types import session_key

log = logging.getLogger(__name__)


def check_rule(settings: Settings, data: Any) -> Rule:
    """Validate decoded JSON as a rule with this deployment's custom allow-list (RuleError if bad)."""
    return validate_rule(data, settings.rules_custom_allow)


def add_rule(settings: Settings, data: Any) -> Rule:
    rule = check_rule(settings, data)
    RuleStore(settings).put(rule)
    return rule


def remove_rule(settings: Settings, rule_id: str) -> None:
    """Delete a rule (a tombstone); RuleError if there is no rule with that id."""
    if rule_id not in {r.id for r in list_rules(settings)}:
        raise RuleError([("id", f"no rule {rule_id!r}; `hindsight rules list` shows the rules in force")])
    RuleStore(settings).delete(rule_id)


def list_rules(settings: Settings, timeout_s: float = 30.0) -> list[Rule]:
    """The rules in the topic now (read to its end)."""
    found: dict[str, Rule] = {}
    reader = RuleReader(settings, found.update)
    reader.start()
    try:
        if not reader.ready.wait(timeout_s):
            raise BrokerUnavailable(
                settings.bootstrap, f"rules topic {settings.rules_topic} not read in time"
            )
    finally:
        reader.stop()
    return sorted(found.values(), key=lambda r: (-r.priority, r.id))


def dry_run(
    settings: Settings, data: Any, since_s: float, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """What a rule would match in logs.raw over the last `since_s` seconds: lines, bytes, sessions."""
    rule = check_rule(settings, data)
    test = compile_rule(rule.model_copy(update={"enabled": True})).test
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - int(since_s * 1000)
    scanned = matched = matched_bytes = 0
    sessions: set[str] = set()
    started = time.monotonic()
    for msg in scan_raw(settings, since_ms, progress=progress):
        for rec in msg.records:
            if rec["timestamp"] < since_ms * 1000:
                continue
            scanned += 1
            if test(rec):
                matched += 1
                matched_bytes += len(orjson.dumps(rec))
                sessions.add(session_key(rec))
    return {
        "rule": rule.id,
        "since": datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(),
        "scanned_lines": scanned,
        "matched_lines": matched,
        "matched_bytes": matched_bytes,
        "matched_sessions": len(sessions),
        "share_of_lines": matched / scanned if scanned else 0.0,
        "seconds": round(time.monotonic() - started, 3),
    }
