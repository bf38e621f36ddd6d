"""The schema registry (Confluent-compatible) through confluent-kafka's client: register and fetch
Avro schemas by id, cached, with basic auth and TLS as the registry requires."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import DecodeError
from pipeline.wire.avro import AvroSchema

if TYPE_CHECKING:
    from pipeline.settings import Settings


class SchemaRegistry:
    """Register the publisher's schema under a subject and fetch writers' schemas by id (cached)."""

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        basic_auth: str | None = None,
        ca_cert: Path | None = None,
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        config: dict[str, Any] = {"url": url.rstrip("/"), "timeout": timeout}
        if basic_auth:
            config["basic.auth.user.info"] = basic_auth  # user:password
        if ca_cert is not None:
            config["ssl.ca.location"] = str(ca_cert)
        self.client = SchemaRegistryClient(config)
        self._by_id: dict[int, AvroSchema] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: AvroSchema) -> int:
        from confluent_kafka.schema_registry import Schema

        key = (subject, schema.canonical)
        with self._lock:
            if key not in self._ids:
                schema_id = self.client.register_schema(
                    subject, Schema(json.dumps(schema.definition), "AVRO")
                )
                self._ids[key] = int(schema_id)
                self._by_id[self._ids[key]] = schema
            return self._ids[key]

    def get(self, schema_id: int) -> AvroSchema:
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        try:
            fetched = self.client.get_schema(schema_id)
        except Exception as exc:  # the registry's own error, or the connection's
            raise DecodeError("unknown_schema", f"schema id {schema_id} not fetched: {exc}") from exc
        if not fetched.schema_str:
            raise DecodeError("unknown_schema", f"schema id {schema_id}: the registry answered no schema")
        schema = AvroSchema(json.loads(fetched.schema_str))
        with self._lock:
            self._by_id[schema_id] = schema
        return schema


def from_settings(settings: Settings) -> SchemaRegistry | None:
    """The registry the settings name, or None."""
    if not settings.schema_registry_url:
        return None
    auth = settings.schema_registry_auth.get_secret_value() if settings.schema_registry_auth else None
    return SchemaRegistry(settings.schema_registry_url, basic_auth=auth, ca_cert=settings.schema_registry_ca)
