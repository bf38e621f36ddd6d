"""Avro on the wire: the project's schemas, single-object encoding's CRC-64-AVRO fingerprint."""

from __future__ import annotations

import io
import json
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint

from pipeline.errors import DecodeError

# package data (schemas/ in the checkout, through the pipeline/schemas symlink; real files in a wheel)
SCHEMA_DIR = Path(str(files("pipeline") / "schemas"))
SINGLE_OBJECT_MAGIC = b"\xc3\x01"


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO fingerprint (Avro spec) of a schema's parsing canonical form, in the byte order
    single-object encoding stores it (fastavro computes it)."""
    return bytes.fromhex(fingerprint(data.decode(), "CRC-64-AVRO"))


def strip_logical(node: Any) -> Any:
    """Drop logicalType so fastavro hands back plain ints (canonical form ignores it anyway)."""
    if isinstance(node, dict):
        return {k: strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical(v) for v in node]
    return node


class AvroSchema:
    """A parsed schema with its fingerprint and a fast schemaless reader/writer."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.name: str = definition["name"]
        self.parsed = fastavro.parse_schema(strip_logical(definition))
        self.canonical = fastavro.schema.to_parsing_canonical_form(self.parsed)
        self.fingerprint = crc64_avro(self.canonical.encode())
        self.header = SINGLE_OBJECT_MAGIC + self.fingerprint

    def write(self, datum: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, datum)
        return buf.getvalue()

    def read(self, payload: bytes | memoryview) -> Any:
        return fastavro.schemaless_reader(io.BytesIO(payload), self.parsed, None)


def _batch_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "namespace": "dev.hindsight",
        "doc": f"Several {record['name']}s of one key in one Kafka message (amortises per-message cost).",
        "fields": [{"name": "records", "type": {"type": "array", "items": record}}],
    }


@cache
def schemas() -> dict[str, AvroSchema]:
    """The four schemas log-hindsight writes, by name."""
    log = json.loads((SCHEMA_DIR / "log_record.avsc").read_text())
    curated = json.loads((SCHEMA_DIR / "curated_record.avsc").read_text())
    out = [AvroSchema(log), AvroSchema(_batch_of(log, "LogBatch")), AvroSchema(curated)]
    out.append(AvroSchema(_batch_of(curated, "CuratedBatch")))
    return {s.name: s for s in out}


def previous_schemas() -> list[AvroSchema]:
    """Earlier versions of the curated schema (schemas/previous/), still read: a message written
    before an upgrade decodes, its newer fields taking their defaults when read (.get)."""
    out = []
    for path in sorted((SCHEMA_DIR / "previous").glob("curated_record.v*.avsc")):
        curated = json.loads(path.read_text())
        out += [AvroSchema(curated), AvroSchema(_batch_of(curated, "CuratedBatch"))]
    return out


@cache
def by_fingerprint() -> dict[bytes, AvroSchema]:
    return {s.fingerprint: s for s in [*previous_schemas(), *schemas().values()]}


def avro_objects(schema: AvroSchema, payload: memoryview) -> list[Any]:
    """The records of one Avro body: a batch schema's records, or the one record."""
    try:
        datum = schema.read(payload)
    except (EOFError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise DecodeError("bad_avro", f"{schema.name}: {type(exc).__name__}: {exc}") from None
    if isinstance(datum, dict) and "records" in datum and schema.name.endswith("Batch"):
        return cast(list[Any], datum["records"])
    return [datum]
