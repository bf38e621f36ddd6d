"""The rules and captures API fuzzed from its own OpenAPI description (schemathesis), on the real
broker: no server errors, every answer as documented (status, content type, body schema)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pipeline.controlapi import ControlServer, openapi
from pipeline.kafka import ensure_topics
from pipeline.settings import Settings
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
TOKEN = "fuzz-token"
schema = schemathesis.openapi.from_dict(openapi())


@pytest.fixture(scope="module")
def api_url(kafka: Settings) -> Iterator[str]:
    settings = kafka.namespaced(f"f{uuid.uuid4().hex[:8]}", api_port=free_port(), api_token=SecretStr(TOKEN))
    ensure_topics(settings)
    server = ControlServer(settings).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_rules_api_conforms_to_its_openapi(case: schemathesis.Case, api_url: str) -> None:
    # Every check but "schema-valid data is accepted": a rule has cross-field rules JSON Schema cannot
    # state (at least one action; drop excludes capture; exactly one of glob/regex/exact; from < until),
    # which correctly answer 400 with the path of the field.
    case.call_and_validate(
        base_url=api_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[positive_data_acceptance],
    )
