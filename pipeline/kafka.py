"""Kafka plumbing shared by commands: reachability check, topic creation, producer settings, lag."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined,unused-ignore]  # typed from 2.13

from pipeline.errors import BrokerUnavailable
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic log-hindsight owns, with its explicit configuration."""

    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics of the pipeline and why each is configured as it is."""
    p = settings.partitions
    max_bytes = str(max(settings.max_record_bytes * 2, 2_097_152))
    return [
        # The replay buffer: time-based retention, compressed as the producer sent it.
        TopicSpec(
            settings.raw_topic,
            p,
            {
                "retention.ms": str(settings.raw_retention_ms),
                "cleanup.policy": "delete",
                "compression.type": "producer",
                "message.timestamp.type": "CreateTime",
                "max.message.bytes": max_bytes,
            },
        ),
        # What the worker reads: lines re-keyed by session. Kept long enough to rebuild the windows
        # after a worker outage (a rebuild reads back lookback + follow); lz4 as it is read hot.
        TopicSpec(
            settings.sessions_topic,
            p,
            {
                "retention.ms": str(settings.sessions_retention_ms),
                "cleanup.policy": "delete",
                "compression.type": "producer",
                "max.message.bytes": max_bytes,
            },
        ),
        TopicSpec(
            settings.curated_topic,
            p,
            {
                "retention.ms": str(settings.curated_retention_ms),
                "cleanup.policy": "delete",
                "max.message.bytes": max_bytes,
            },
        ),
        TopicSpec(
            settings.stats_topic,
            1,
            {"retention.ms": str(settings.curated_retention_ms), "cleanup.policy": "delete"},
        ),
        TopicSpec(
            settings.dlq_topic,
            1,
            {
                "retention.ms": str(settings.dlq_retention_ms),
                "cleanup.policy": "delete",
                "max.message.bytes": max_bytes,
            },
        ),
        # Worker processes' shared state, as a log of changes: one partition, so every worker reads
        # them in the same order (auth failures fire once because of it); kept beyond lookback + follow.
        TopicSpec(
            settings.shared_topic,
            1,
            {"retention.ms": str(settings.shared_retention_ms), "cleanup.policy": "delete"},
        ),
        # Rules are state: the latest value per rule id wins, a tombstone deletes it.
        TopicSpec(
            settings.rules_topic,
            1,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"},
        ),
    ]


def admin(settings: Settings, quiet: bool = False) -> AdminClient:
    config: dict[str, str | int | float | bool] = {**settings.kafka_client_config()}
    config["socket.timeout.ms"] = 5000
    if quiet:
        # while waiting for a broker, refused connections are expected: keep librdkafka silent
        config["log_level"] = 0
    return AdminClient(config)


def wait_for_broker(settings: Settings, timeout_s: float | None = None) -> None:
    """Return once the cluster answers a metadata request; BrokerUnavailable otherwise."""
    timeout_s = settings.request_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    client = admin(settings, quiet=True)
    last = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailable(settings.bootstrap, last or f"no answer within {timeout_s:.0f}s")
        try:
            meta = client.list_topics(timeout=min(remaining, 2.0))
            if meta.brokers:
                return
        except KafkaException as exc:
            last = str(exc.args[0]) if exc.args else str(exc)
        time.sleep(0.2)


def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics with their configs; returns the names created. Idempotent."""
    wait_for_broker(settings)
    client = admin(settings)
    existing = set(client.list_topics(timeout=settings.request_timeout_s).topics)
    wanted = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=settings.replication_factor,
            config=s.config,
        )
        for s in topic_specs(settings)
        if s.name not in existing
    ]
    created = []
    if wanted:
        for name, future in client.create_topics(wanted, request_timeout=settings.request_timeout_s).items():
            try:
                future.result()
                created.append(name)
                log.info("topic created name=%s", name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    # Topic creation is asynchronous on the controller; wait until metadata shows leaders.
    deadline = time.monotonic() + settings.request_timeout_s
    names = {s.name for s in topic_specs(settings)}
    while time.monotonic() < deadline:
        meta = client.list_topics(timeout=2.0).topics
        if all(n in meta and meta[n].partitions and not meta[n].error for n in names):
            break
        time.sleep(0.1)
    return created


def producer_config(settings: Settings) -> dict[str, object]:
    """Durable, ordered, compressed producer settings."""
    return {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        # the Java client's hash: lines keyed by session land where other producers put that session
        "partitioner": "murmur2_random",
        "compression.type": "zstd",
        "linger.ms": 20,
        "batch.size": 1_048_576,
        "message.max.bytes": max(settings.max_record_bytes * 2, 2_097_152),
    }


def group_lag(settings: Settings, group: str, topic: str, timeout_s: float = 5.0) -> dict[int, int]:
    """Messages per partition of `topic` that `group` has not committed yet (its consumer lag).
    A partition the group never committed counts from the log start."""
    client = admin(settings, quiet=True)
    meta = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(meta.error if meta is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    partitions = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    request = ConsumerGroupTopicPartitions(group, partitions)
    committed_tps = (
        client.list_consumer_group_offsets([request], request_timeout=timeout_s)[group]
        .result()
        .topic_partitions
    )
    committed = {tp.partition: tp.offset for tp in committed_tps}

    def offsets(spec: OffsetSpec) -> dict[int, int]:
        futures = client.list_offsets({tp: spec for tp in partitions}, request_timeout=timeout_s)
        return {tp.partition: f.result().offset for tp, f in futures.items()}

    latest = offsets(OffsetSpec.latest())  # type: ignore[no-untyped-call,unused-ignore]
    earliest = offsets(OffsetSpec.earliest())  # type: ignore[no-untyped-call,unused-ignore]
    return {
        p: max(0, latest[p] - (committed[p] if committed.get(p, -1) >= 0 else earliest[p])) for p in latest
    }


def record_time_us(msg: Message) -> int | None:
    """A record's Kafka timestamp in microseconds (None if it has none): the time of a line that
    carries none, the same on every read (ingest, replay, archive), so a line keeps one identity."""
    kind, ms = msg.timestamp()
    return ms * 1000 if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0 else None
