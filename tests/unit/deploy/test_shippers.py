"""The shipper configs in deploy/shippers publish what `hindsight ingest` reads: the raw topic, JSON
(or OTLP) values, the time key the shapes expect. The shapes themselves are tested in
tests/unit/wire/test_shapes.py with records exactly as these configs produce them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from pipeline.settings import Settings

SHIPPERS = Path(__file__).resolve().parents[3] / "deploy" / "shippers"
RAW = Settings().raw_topic


def test_vector_sends_kubernetes_events_as_json_to_the_raw_topic() -> None:
    config = tomllib.loads((SHIPPERS / "vector.toml").read_text())
    [sink] = config["sinks"].values()
    assert sink["type"] == "kafka" and sink["topic"] == RAW and sink["encoding"]["codec"] == "json"
    assert config["sources"][sink["inputs"][0]]["type"] == "kubernetes_logs"


def test_fluent_bit_sends_json_with_an_epoch_timestamp_key_to_the_raw_topic() -> None:
    text = (SHIPPERS / "fluent-bit.conf").read_text()
    output = text[text.index("[OUTPUT]") :]
    keys = dict(re.findall(r"^\s+(\S+)\s+(.+?)\s*$", output, re.M))
    assert keys["Name"] == "kafka" and keys["Topics"] == RAW and keys["Format"] == "json"
    assert keys["Timestamp_Key"] == "@timestamp" and keys["Timestamp_Format"] == "double"


def test_the_collector_exports_otlp_logs_to_the_raw_topic() -> None:
    config = yaml.safe_load((SHIPPERS / "otel-collector.yaml").read_text())
    kafka = config["exporters"]["kafka"]
    assert kafka["logs"]["topic"] == RAW and kafka["logs"]["encoding"] in ("otlp_proto", "otlp_json")
    assert config["service"]["pipelines"]["logs"]["exporters"] == ["kafka"]
