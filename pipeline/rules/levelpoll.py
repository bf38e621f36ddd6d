"""Dynamic levels: poll a GET URL for {"default": L, "services": {..}, "endpoints": {..}} and apply
it as level rules. ETag-aware; on a failure (timeout, HTTP error, bad JSON, bad level) the last good
answer stays in force and the failure is counted and logged."""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.rules.model import Rule, RuleError, validate_rule

log = logging.getLogger(__name__)


@dataclass
class PollerMetrics:
    """hindsight_level_polls_total, ..._failures_total, ..._not_modified_total."""

    polls: int = 0
    failures: int = 0
    not_modified: int = 0
    last_error: str = ""


class LevelPoller(threading.Thread):
    def __init__(
        self, url: str, interval_s: float, timeout_s: float, apply: Callable[[list[Rule]], None]
    ) -> None:
        super().__init__(name="hindsight-levels", daemon=True)
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.apply = apply
        self.etag: str | None = None
        self.last_good: list[Rule] | None = None
        self.metrics = PollerMetrics()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval_s)

    def poll_once(self) -> bool:
        """One poll; True if new rules were applied."""
        self.metrics.polls += 1
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self.etag:
            request.add_header("If-None-Match", self.etag)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read(1_048_576)
                etag = response.headers.get("ETag")
            rules = level_rules(orjson.loads(body))
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                self.metrics.not_modified += 1
                return False
            return self._failed(f"HTTP {exc.code}")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return self._failed(f"unreachable: {getattr(exc, 'reason', exc)}")
        except orjson.JSONDecodeError as exc:
            return self._failed(f"not JSON: {exc}")
        except RuleError as exc:
            return self._failed(f"bad levels: {exc}")
        self.etag = etag
        self.last_good = rules
        self.apply(rules)
        log.info(
            "levels applied url=%s rules=%s etag=%s seconds=%.3f",
            self.url,
            len(rules),
            etag,
            time.monotonic() - started,
        )
        return True

    def _failed(self, reason: str) -> bool:
        self.metrics.failures += 1
        self.metrics.last_error = reason
        kept = len(self.last_good) if self.last_good is not None else 0
        log.warning("level poll failed url=%s reason=%s keeping_rules=%s", self.url, reason, kept)
        return False


def level_rules(answer: dict[str, Any]) -> list[Rule]:
    """Rules from a dynamic-level answer {"default": L, "services": {S: L}, "endpoints": {E: L}}.

    Raises RuleError if the answer is malformed (the poller then keeps its last good answer).
    """
    if not isinstance(answer, dict):
        raise RuleError([("(root)", "expected a JSON object")])
    unknown = set(answer) - {"default", "services", "endpoints"}
    if unknown:
        raise RuleError([(k, "unknown key (expected default, services, endpoints)") for k in sorted(unknown)])
    rules: list[dict[str, Any]] = []
    if answer.get("default") is not None:
        rules.append({"id": "level:default", "priority": -100, "actions": {"level": answer["default"]}})
    for i, (kind, fieldname) in enumerate((("services", "service"), ("endpoints", "endpoint"))):
        mapping = answer.get(kind) or {}
        if not isinstance(mapping, dict):
            raise RuleError([(kind, "expected an object of name -> level")])
        for name, level in mapping.items():
            rules.append(
                {
                    "id": re.sub(r"[^A-Za-z0-9_.:@-]", "_", f"level:{fieldname}:{name}")[:128],
                    "priority": -90 + i,  # endpoint beats service beats default; every real rule beats all
                    "match": {"all": [{fieldname: name}]},
                    "actions": {"level": str(level).upper()},
                }
            )
    out = []
    problems: list[tuple[str, str]] = []
    for spec in rules:
        try:
            out.append(validate_rule(spec))
        except RuleError as exc:
            problems.extend((f"{spec['id']}.{p}", m) for p, m in exc.problems)
    if problems:
        raise RuleError(problems)
    return out
