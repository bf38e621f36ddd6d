"""Sink connectors, found through one lazy registry so a sink's dependencies load only when used."""

from __future__ import annotations

import importlib
from typing import cast

from connectors.base.protocols import SinkFactory
from pipeline.errors import ConfigError
from pipeline.extras import missing

REGISTRY: dict[str, str] = {
    "clickhouse": "connectors.clickhouse:ClickHouseSink",
    "file": "connectors.files:FileSink",
    "postgres": "connectors.postgres:PostgresSink",
    "redis": "connectors.redis_recent:RedisSink",
    "webhook": "connectors.webhook:WebhookSink",
}


def load_sink(name: str) -> SinkFactory:
    """The sink class registered under name."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown sink {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module, _, attr = target.partition(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:  # its client library comes with an extra (pipeline/extras.py)
        error = missing(exc, f"the {name} sink")
        if error is None:
            raise
        raise error from None
    return cast(SinkFactory, getattr(loaded, attr))
