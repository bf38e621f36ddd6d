"""What every sink shares around its own writing: routing (which lines it gets) and redaction
(connectors.base.redaction). Wraps any Sink; the runner sees a Sink again."""

from __future__ import annotations

from collections.abc import Sequence

from connectors.base.protocols import Sink
from connectors.base.redaction import Redactor
from pipeline.settings import Settings
from pipeline.types import CuratedRecord


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


def wrap(sink: Sink, settings: Settings) -> Wrapped:
    """Route and redact for this sink, as configured (primary sinks get every line; the built-in
    redaction applies unless turned off, for all sinks or this one)."""
    redaction = settings.redaction
    rules = [*redaction.get("*", []), *redaction.get(sink.name, [])]
    builtin = settings.redaction_defaults and sink.name not in settings.redaction_defaults_except
    key = settings.redaction_key.get_secret_value().encode() if settings.redaction_key is not None else None
    redactor = Redactor(rules, builtin, key) if rules or builtin else None
    return Wrapped(sink, sink.name not in settings.primary_sinks, redactor)
