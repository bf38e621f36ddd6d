"""From a raw Kafka value to curated batches and dead letters: decode + windows, no Kafka I/O."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import Emission, WindowConfig, WindowMetrics
from pipeline.errors import DecodeError
from pipeline.rules.compiled import RuleSet
from pipeline.settings import Settings
from pipeline.types import CuratedRecord, LineView, LogRecord
from pipeline.wire.deadletter import Rejected, rejections
from pipeline.wire.frames import decode_framed, is_framed, unframed
from pipeline.wire.raw import RawDecoder, batch_elements, good_positions
from pipeline.wire.registry import from_settings as registry_from_settings
from pipeline.wire.sessions import decode_line, decode_lines, split_sessions
from pipeline.worker.dedup import OriginDedup

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one raw message produced."""

    curated: dict[str, list[CuratedRecord]] = field(default_factory=dict)
    stats: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def window_config(settings: Settings) -> WindowConfig:
    """The engine's configuration, taken from the settings by name (see WindowConfig.from_mapping)."""
    return WindowConfig.from_mapping(settings.model_dump())


def tune_gc(young_threshold: int) -> None:
    """Collect the young generation every `young_threshold` allocations and older ones rarely.

    The window buffers keep hundreds of thousands of decoded lines alive; with Python's default
    thresholds the collector re-walks them so often that it costs about a third of the throughput.
    The pipeline creates few reference cycles, so collecting less often costs little memory.
    """
    if young_threshold > 0:
        gc.collect()
        gc.freeze()  # what exists at start-up (modules, settings) is never garbage: stop re-walking it
        gc.set_threshold(young_threshold, 50, 1000)


@dataclass(frozen=True)
class ProcessorStats:
    """A snapshot of what the processor counted, for metrics and logs."""

    windows: WindowMetrics
    dlq_by_type: dict[str, int]
    dlq_records: int
    raw_messages: int
    raw_bytes: int
    curated_bytes: int
    sessions: int
    buffered_lines: int
    buffered_bytes: int
    memory_budget_bytes: int
    repeated_lines: int  # canonical lines an ingest restart sent again, dropped
    lookback_us: int  # configured
    effective_lookback_us: int  # what evictions leave of it
    templates_known: int  # templates in the catalog
    novel_templates: int  # templates learned from a line of this process
    novel_suppressed: int  # novel templates the budget kept from firing
    templates_evicted: int  # templates forgotten early to stay within templates_max


class RawProcessor:
    """Decodes raw messages and feeds the session windows; counts dead letters. Its edge: handle,
    tick, drop, set_rules and stats; nobody reaches into the windows."""

    def __init__(self, settings: Settings, origin: str | None = None) -> None:
        """`origin`: this process on the shared-state topic (None: it shares state with nobody)."""
        registry = registry_from_settings(settings)
        self.decoder = RawDecoder(settings.max_record_bytes, registry)
        self.sessions_topic = settings.sessions_topic
        self.dedup = OriginDedup()  # repeats of canonical lines after an ingest restart
        self._windows = Hindsight(window_config(settings), decode_line, origin)
        self.timeout_attribute = self._windows.config.timeout_attribute
        self.dlq_records = 0
        self.dlq_by_type: dict[str, int] = {}
        self.raw_messages = 0
        self.raw_bytes = 0  # wire bytes read from logs.raw: what keeping everything would cost
        self.curated_bytes = 0  # wire bytes sent to logs.curated (the worker adds them)

    def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        replay: bool = False,
        timestamp_ms: int | None = None,
    ) -> Outcome:
        """Decode one message of logs.sessions (canonical batches from ingest) or of logs.raw (any shape;
        a line without a time takes `timestamp_ms`, the record's) and feed its lines; with replay=True
        only rebuild state (emit nothing)."""
        outcome = Outcome()
        if not replay:
            self.raw_messages += 1
            self.raw_bytes += len(value) if value else 0
        records: list[LogRecord] = []
        errors: list[tuple[int | None, DecodeError]] = []
        if topic == self.sessions_topic:
            emission, errors = self._sessions(partition, offset, value, replay)
            if emission is not None:
                outcome.curated = emission.curated
                outcome.stats = emission.stats
        else:
            records, errors = self.decoder.decode(value, timestamp_ms * 1000 if timestamp_ms else None)
        if errors and not replay:
            elements = batch_elements(value) if any(i is not None for i, _ in errors) else []
            for rej in rejections(value, errors, "decode", elements):
                outcome.rejected.append(rej)
                self.dlq_records += 1
                self.dlq_by_type[rej.error_type] = self.dlq_by_type.get(rej.error_type, 0) + 1
                log.warning(
                    "dead letter error_type=%s partition=%s offset=%s index=%s reason=%s",
                    rej.error_type,
                    partition,
                    offset,
                    rej.index,
                    rej.reason[:200],
                )
        if records:
            idx = good_positions(records, errors) if errors else None
            emission = self._windows.process_message(topic, partition, offset, records, idx, replay)
            outcome.curated = emission.curated
            outcome.stats = emission.stats
        return outcome

    def _sessions(
        self, partition: int, offset: int, value: bytes | None, replay: bool
    ) -> tuple[Emission | None, list[tuple[int | None, DecodeError]]]:
        """One logs.sessions message. A framed one (what ingest writes) goes to the engine as columns,
        its lines kept as slices of the message and decoded only if they may matter; an unframed
        one, or one with repeats to drop, is validated and cut line by line."""
        topic = self.sessions_topic
        try:
            if is_framed(value):
                assert value is not None
                framed = decode_framed(value)
                origins = framed.origins
                kept = self.dedup.keep_origins(
                    partition, origins.raw_partition, origins.raw_offset, origins.raw_index
                )
                if kept is None and framed.columns.timeout_attribute == self.timeout_attribute:
                    # A line is decoded only when it may matter, so a line ingest did not write (the
                    # header checked out, a line does not) fails then: its message is dead-lettered,
                    # what the engine did with the lines before it stays done.
                    windows = self._windows
                    return windows.process_columns(topic, partition, offset, framed.columns, replay), []
                # rare: repeats to drop (see below), or flags computed for another attribute
                value = unframed(value)
                lines = decode_lines(value)
            else:
                lines = decode_lines(value)
                kept = self.dedup.keep(partition, lines)
            # the engine buffers each line as these bytes (~1.3x its size, not ~1.7 KB as dicts)
            encoded = split_sessions(value or b"") if lines else []
        except DecodeError as exc:
            return None, [(None, exc)]
        if kept is not None:
            # rare: ingest restarted between producing these lines and committing their offsets
            log.info("repeated lines dropped partition=%s offset=%s lines=%s", partition, offset,
                     len(lines) - len(kept))  # fmt: skip
            lines = [lines[i] for i in kept]
            encoded = [encoded[i] for i in kept]
        if not lines:
            return None, []
        # the validated structs themselves: the engine builds a line's dict only if it needs it
        # (a copy of the list: typed as LineViews, so mypy checks the struct is one)
        views: list[LineView] = list(lines)
        return self._windows.process_lines(topic, partition, offset, views, None, replay, encoded), []

    def rebuild(self, topic: str, partition: int, past: list[tuple[int, bytes | None]]) -> Outcome:
        """A newly assigned partition's recent past (offset, value), replayed before its first live
        message: its own lines only rebuild state (the previous owner sent them), but a capture the
        replay reopens (a security flag, a scoped rule) also covers lines that partitions live in this
        process already hold and the previous owner never saw. Those are emitted, as are the lines of
        auth-failure triggers the shared log decided on this partition: the caller sends them (a line
        sent twice is one row in the store, whose dedup is by the raw line's id). Apply the shared log
        (apply_shared) before a rebuild, so what it decided is known."""
        out = Outcome()
        for offset, value in past:
            got = self.handle(topic, partition, offset, value, replay=True)
            for key, rows in got.curated.items():
                out.curated.setdefault(key, []).extend(rows)
            out.stats.extend(got.stats)
        # auth failures the shared log decided on this partition's lines fire here (their process died)
        fired = self._windows.refire(topic, partition)
        for key, rows in fired.curated.items():
            out.curated.setdefault(key, []).extend(rows)
        return out

    def outbox(self) -> list[dict[str, Any]]:
        """Changes of the shared state made here since the last call, for the shared-state topic."""
        return self._windows.take_outbox()

    def apply_shared(self, changes: list[dict[str, Any]]) -> Outcome:
        """Changes read from the shared-state topic, in its order: what they emit here."""
        emission = self._windows.apply_shared(changes)
        return Outcome(emission.curated, emission.stats)

    def tick(self, now_us: int) -> Outcome:
        """Wall-clock housekeeping (about once a second): idle windows close, summaries go out."""
        emission = self._windows.tick(now_us)
        return Outcome(emission.curated, emission.stats)

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition that was revoked."""
        self._windows.drop(topic, partition)
        if topic == self.sessions_topic:
            self.dedup.drop(partition)

    def set_rules(self, rules: RuleSet) -> None:
        """Lines handled after this see the new rules."""
        self._windows.set_rules(rules)

    def sent_curated(self, size: int) -> None:
        """The worker sent `size` bytes to logs.curated."""
        self.curated_bytes += size

    def stats(self) -> ProcessorStats:
        windows = self._windows
        return ProcessorStats(
            windows.metrics,
            dict(self.dlq_by_type),
            self.dlq_records,
            self.raw_messages,
            self.raw_bytes,
            self.curated_bytes,
            windows.sessions(),
            windows.buffered_lines(),
            windows.buffered_bytes(),
            windows.config.memory_budget_bytes,
            self.dedup.repeats,
            windows.config.lookback_us,
            windows.effective_lookback_us(),
            len(windows.shared.catalog),
            windows.shared.catalog.novel,
            windows.shared.catalog.suppressed,
            windows.shared.catalog.evicted,
        )
