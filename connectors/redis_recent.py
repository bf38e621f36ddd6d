"""Redis sink: each user's and session's most recent kept lines, with a TTL, for fast support lookups.

Keys `hindsight:user:<id>` and `hindsight:session:<id>` are sorted sets of raw line ids scored by
event time, each beside a hash `<key>:lines` of raw id -> the line's JSON: a redelivered or replayed
line has the same id and adds nothing. Each key keeps its newest `keep` lines and expires `ttl_s`
after its last write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis

from pipeline.errors import BadDataError, ConfigError, RetryableSinkError
from pipeline.settings import Settings
from pipeline.types import CuratedRecord

log = logging.getLogger(__name__)

PREFIX = "hindsight"


def key_for(kind: str, value: str) -> str:
    return f"{PREFIX}:{kind}:{value}"


class RedisSink:
    name = "redis"

    def __init__(self, client: redis.Redis, keep: int = 1000, ttl_s: int = 86_400) -> None:
        self.client = client
        self.keep = keep
        self.ttl_s = ttl_s
        self._pending: list[CuratedRecord] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisSink:
        if settings.redis_url is None:
            raise ConfigError("the redis sink needs HINDSIGHT_REDIS_URL")
        client = redis.Redis.from_url(
            settings.redis_url.get_secret_value(), socket_timeout=5, socket_connect_timeout=5
        )
        return cls(client, settings.redis_keep_lines, settings.redis_ttl_s)

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        rows, self._pending = self._pending, []  # the runner hands the batch again after a failure
        if not rows:
            return
        ids: dict[str, dict[str, float]] = {}
        lines: dict[str, dict[str, bytes]] = {}
        try:
            for r in rows:
                raw_id = f"{r['raw_topic']}:{r['raw_partition']}:{r['raw_offset']}:{r['raw_index']}"
                line = orjson.dumps(r)
                for kind, value in (("user", r.get("user_id")), ("session", r.get("session_id"))):
                    if value:
                        key = key_for(kind, value)
                        ids.setdefault(key, {})[raw_id] = r["timestamp"]
                        lines.setdefault(key, {})[raw_id] = line
        except (TypeError, KeyError) as exc:
            raise BadDataError(f"row not storable in Redis: {exc}") from exc
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, scored in ids.items():
                pipe.zadd(key, scored)
                pipe.hset(f"{key}:lines", mapping=lines[key])  # type: ignore[arg-type]
                pipe.zcard(key)
            counts = pipe.execute()[2::3]
            pipe = self.client.pipeline(transaction=False)
            over = [(key, n - self.keep) for key, n in zip(ids, counts, strict=True) if n > self.keep]
            for key, extra in over:
                pipe.zrange(key, 0, extra - 1)
            for (key, extra), old in zip(over, pipe.execute() if over else [], strict=True):
                pipe.zremrangebyrank(key, 0, extra - 1)
                pipe.hdel(f"{key}:lines", *old)
            for key in ids:
                pipe.expire(key, self.ttl_s)
                pipe.expire(f"{key}:lines", self.ttl_s)
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RetryableSinkError(f"Redis unavailable: {exc}") from exc
        except redis.ResponseError as exc:
            raise BadDataError(f"Redis refused the rows: {exc}") from exc

    def close(self) -> None:
        self.client.close()


def recent_lines(client: redis.Redis, kind: str, value: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest lines of a user or session, newest first (what a support page shows)."""
    key = key_for(kind, value)
    ids: list[bytes] = client.zrevrange(key, 0, limit - 1)  # type: ignore[assignment]
    if not ids:
        return []
    found: list[bytes | None] = client.hmget(f"{key}:lines", ids)  # type: ignore[assignment]
    return [orjson.loads(line) for line in found if line is not None]
