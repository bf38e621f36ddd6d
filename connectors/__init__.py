"""Sink connectors, found through one lazy registry so a sink's dependencies load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.errors import ConfigError

REGISTRY: dict[str, str] = {
    "clickhouse": "connectors.clickhouse:ClickHouseSink",
    "file": "connectors.files:FileSink",
    "postgres": "connectors.postgres:PostgresSink",
    "redis": "connectors.redis_recent:RedisSink",
    "webhook": "connectors.webhook:WebhookSink",
}


def load_sink(name: str) -> Any:
    """The sink class registered under name (it has a `from_settings` classmethod)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown sink {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
