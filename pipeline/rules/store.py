"""Rules on Kafka: the compacted hindsight.rules topic (key = rule id, tombstone = delete).

Writers validate before producing, so nothing invalid reaches the topic through log-hindsight;
readers still validate, and dead-letter what another producer wrote, with the reason.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.errors import BrokerUnavailable
from pipeline.kafka import producer_config
from pipeline.rules.compiled import RuleSet
from pipeline.rules.model import Rule, RuleError, validate_rule
from pipeline.settings import Settings
from pipeline.wire.deadletter import Rejected, dlq_headers

log = logging.getLogger(__name__)


def rule_json(rule: Rule) -> bytes:
    return orjson.dumps(rule.model_dump(mode="json", exclude_defaults=True))


class RuleStore:
    """Produces rule updates and tombstones to the rules topic (acks=all, waits for delivery)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings))

    def _produce(self, key: str, value: bytes | None) -> None:
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)

        self.producer.produce(self.settings.rules_topic, key=key.encode(), value=value, on_delivery=delivered)
        left = self.producer.flush(self.settings.request_timeout_s * 2)
        if left or errors:
            raise BrokerUnavailable(self.settings.bootstrap, f"rule {key} not written: {errors or 'timeout'}")

    def put(self, rule: Rule) -> None:
        self._produce(rule.id, rule_json(rule))
        log.info("rule written id=%s priority=%s enabled=%s", rule.id, rule.priority, rule.enabled)

    def delete(self, rule_id: str) -> None:
        self._produce(rule_id, None)
        log.info("rule deleted id=%s", rule_id)


class RuleReader(threading.Thread):
    """Follows the rules topic from its beginning (every partition, no consumer group).

    Calls `apply(rules)` with the full, validated set after each batch of changes; `ready` is set
    once the topic was read up to where it ended at start-up. Invalid records are dead-lettered.
    """

    def __init__(
        self,
        settings: Settings,
        apply: Callable[[dict[str, Rule]], None],
        dead_letter: Callable[[Message, str], None] | None = None,
    ) -> None:
        super().__init__(name="hindsight-rules", daemon=True)
        self.settings = settings
        self.apply = apply
        self.dead_letter = dead_letter
        self.rules: dict[str, Rule] = {}
        self.ready = threading.Event()
        self.invalid = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        topic = self.settings.rules_topic
        consumer = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": f"{self.settings.app_id}-rules-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
            parts = sorted(meta.partitions) if meta is not None and meta.error is None else [0]
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
            consumer.assign([TopicPartition(topic, p, -2) for p in parts])  # -2: the beginning
            caught_up = {p for p, end in ends.items() if end == 0}
            if len(caught_up) == len(parts):
                self._publish()
            while not self._stop.is_set():
                changed = False
                for msg in consumer.consume(500, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    changed |= self._handle(msg)
                    partition, offset = msg.partition(), msg.offset()
                    if partition is not None and offset is not None and offset + 1 >= ends.get(partition, 0):
                        caught_up.add(partition)
                if changed or (not self.ready.is_set() and len(caught_up) == len(parts)):
                    self._publish()
        except Exception:
            log.exception("rule reader stopped topic=%s", topic)
        finally:
            consumer.close()

    def _handle(self, msg: Message) -> bool:
        key = (msg.key() or b"").decode("utf-8", "replace")
        value = msg.value()
        if value is None:
            return self.rules.pop(key, None) is not None
        try:
            rule = validate_rule(orjson.loads(value), self.settings.rules_custom_allow)
            if rule.id != key:
                raise RuleError([("id", f"rule id {rule.id!r} differs from its Kafka key {key!r}")])
        except (orjson.JSONDecodeError, RuleError) as exc:
            self.invalid += 1
            log.error("invalid rule record key=%s offset=%s reason=%s", key, msg.offset(), exc)
            if self.dead_letter is not None:
                self.dead_letter(msg, f"invalid rule: {exc}")
            return False
        self.rules[key] = rule
        return True

    def _publish(self) -> None:
        self.apply(dict(self.rules))
        self.ready.set()


class RuleSource:
    """Merges the topic's rules with the level poller's into the RuleSet the engine uses."""

    def __init__(self, apply: Callable[[RuleSet], None]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self.topic_rules: dict[str, Rule] = {}
        self.level_rules: list[Rule] = []

    def set_topic_rules(self, rules: dict[str, Rule]) -> None:
        with self._lock:
            self.topic_rules = rules
            self._rebuild()

    def set_level_rules(self, rules: list[Rule]) -> None:
        with self._lock:
            self.level_rules = rules
            self._rebuild()

    def _rebuild(self) -> None:
        # a rule from the topic with the same id as a level rule wins (operators override the URL)
        merged: dict[str, Rule] = {r.id: r for r in self.level_rules}
        merged.update(self.topic_rules)
        ruleset = RuleSet(merged.values())
        log.info("rules in force total=%s active=%s", len(merged), len(ruleset.compiled))
        self._apply(ruleset)


def dead_letter_producer(settings: Settings) -> Callable[[Message, str], None]:
    """Sends an unusable rules-topic record to logs.dlq with the same headers as any dead letter."""
    producer = Producer(producer_config(settings))

    def send(msg: Message, reason: str) -> None:
        rejected = Rejected("invalid_rule", reason, "rules", msg.value() or b"")
        headers: Any = dlq_headers(rejected, settings.rules_topic, msg.partition() or 0, msg.offset() or 0)
        producer.produce(settings.dlq_topic, key=msg.key(), value=msg.value(), headers=headers)
        producer.flush(5)

    return send
