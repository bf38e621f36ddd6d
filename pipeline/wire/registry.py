"""A Confluent-compatible schema registry client: register and fetch Avro schemas by id."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import orjson

from pipeline.errors import DecodeError
from pipeline.wire.avro import AvroSchema


class SchemaRegistry:
    """Minimal Confluent-compatible schema registry client (register and fetch by id), cached."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._by_id: dict[int, AvroSchema] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            method="POST" if data is not None else "GET",
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return orjson.loads(resp.read())

    def register(self, subject: str, schema: AvroSchema) -> int:
        key = (subject, schema.canonical)
        with self._lock:
            if key not in self._ids:
                answer = self._call(
                    f"/subjects/{subject}/versions", {"schema": json.dumps(schema.definition)}
                )
                self._ids[key] = int(answer["id"])
                self._by_id[self._ids[key]] = schema
            return self._ids[key]

    def get(self, schema_id: int) -> AvroSchema:
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        try:
            answer = self._call(f"/schemas/ids/{schema_id}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DecodeError("unknown_schema", f"schema id {schema_id} not fetched: {exc}") from exc
        schema = AvroSchema(json.loads(answer["schema"]))
        with self._lock:
            self._by_id[schema_id] = schema
        return schema
