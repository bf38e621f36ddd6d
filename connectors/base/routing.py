"""What every sink shares around its own writing: routing (which lines it gets) and redaction
(which attributes it may see). Wraps any Sink; the runner sees a Sink again."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from typing import Literal

from connectors.base.protocols import Sink
from pipeline.errors import ConfigError
from pipeline.types import CuratedRecord

Action = Literal["mask", "hash", "drop"]
MASK = "***"


class Redactor:
    """Attribute keys matching a glob are masked, hashed (sha256, 16 hex: still joinable) or dropped."""

    def __init__(self, rules: Sequence[dict[str, str]]) -> None:
        compiled: list[tuple[re.Pattern[str], Action]] = []
        for i, rule in enumerate(rules):
            key, action = rule.get("key"), rule.get("action", "mask")
            if not key or action not in ("mask", "hash", "drop") or set(rule) - {"key", "action"}:
                raise ConfigError(
                    f"redaction rule {i}: want {{'key': GLOB, 'action': mask|hash|drop}}, got {rule}"
                )
            compiled.append((re.compile(fnmatch.translate(key), re.IGNORECASE), action))  # type: ignore[arg-type]
        self.rules = compiled
        self._decided: dict[str, Action | None] = {}

    def _action(self, key: str) -> Action | None:
        if key not in self._decided:
            self._decided[key] = next((a for pattern, a in self.rules if pattern.match(key)), None)
        return self._decided[key]

    def apply(self, row: CuratedRecord) -> CuratedRecord:
        attrs = row.get("attributes") or {}
        if not self.rules or not any(self._action(k) for k in attrs):
            return row
        out: dict[str, str] = {}
        for key, value in attrs.items():
            action = self._action(key)
            if action is None:
                out[key] = value
            elif action == "mask":
                out[key] = MASK
            elif action == "hash":
                out[key] = "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]
        return {**row, "attributes": out}


class Wrapped:
    """A sink that gets only the lines meant for it, redacted for it; `sink` is the one it wraps
    (whose capabilities, such as HasStatsSink or StoreReader, the services ask of it)."""

    def __init__(self, sink: Sink, routed_only: bool, redactor: Redactor | None) -> None:
        self.sink = sink
        self.name = sink.name
        self.routed_only = routed_only
        self.redactor = redactor

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        if self.routed_only:
            rows = [r for r in rows if self.name in (r.get("routes") or ())]
        if self.redactor is not None:
            rows = [self.redactor.apply(r) for r in rows]
        if rows:
            self.sink.write_batch(rows)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()


def wrap(sink: Sink, primary: Sequence[str], redaction: dict[str, list[dict[str, str]]]) -> Wrapped:
    """Route and redact for this sink, as configured (primary sinks get every line)."""
    rules = [*redaction.get("*", []), *redaction.get(sink.name, [])]
    return Wrapped(sink, sink.name not in primary, Redactor(rules) if rules else None)
