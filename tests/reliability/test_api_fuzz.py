"""The rules/captures API (real broker) and the query API (real store) fuzzed from their own OpenAPI
descriptions (schemathesis): no server errors, every answer as documented (status, content type, body
schema); SQL injection through query parameters and write statements through /sql are refused."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import positive_data_acceptance

from connectors.clickhouse import ClickHouseSink
from pipeline.api.control import ControlServer, openapi
from pipeline.api.query import openapi as openapi_query
from pipeline.engine.curate import curate
from pipeline.errors import QueryError
from pipeline.kafka import ensure_topics
from pipeline.ops.services import store_query_server
from pipeline.settings import Settings
from pipeline.store.client import QueryApi, remote_query, remote_sql, server_token
from pipeline.store.query import QueryFilters
from pipeline.types import RawLine
from pipeline.wire.records import normalize
from tests.conftest import free_port

pytestmark = [pytest.mark.reliability]
TOKEN = "fuzz-token"
schema = schemathesis.openapi.from_dict(openapi())


# status classes the fuzzed APIs answered: the token must really get through, or every case would
# "conform" by answering 401
answered: dict[str, Counter[int]] = {"rules": Counter(), "query": Counter()}


@pytest.fixture(scope="module", autouse=True)
def _authorized_cases_reached_the_handlers() -> Iterator[None]:
    yield
    for api, classes in answered.items():
        if classes:  # that API's fuzz test ran
            assert classes[2] > 0 and classes[4] > 0, f"{api} API answers: {dict(classes)}"


class BearerAuth:
    """The token as schemathesis' auth: its negative cases that leave the header out stay left out
    (and must get 401), where an override would have added it back to a "missing header" case."""

    def get(self, case: schemathesis.Case, ctx: object) -> str:
        return TOKEN

    def set(self, case: schemathesis.Case, data: str, ctx: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


schema.auth()(BearerAuth)


@pytest.fixture(scope="module")
def api_url(kafka: Settings, query_api: QueryApi) -> Iterator[str]:
    # /lines and /incidents read through a real store owner (the query API fixture below)
    query_port = int(query_api.url.rsplit(":", 1)[1])
    settings = kafka.namespaced(
        f"f{uuid.uuid4().hex[:8]}", api_port=free_port(), query_port=query_port, api_token=SecretStr(TOKEN)
    )
    ensure_topics(settings)
    server = ControlServer(settings).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.mark.integration
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_rules_api_conforms_to_its_openapi(case: schemathesis.Case, api_url: str) -> None:
    # Every check but "schema-valid data is accepted": a rule has cross-field rules JSON Schema cannot
    # state (at least one action; drop excludes capture; exactly one of glob/regex/exact; from < until),
    # which correctly answer 400 with the path of the field.
    response = case.call_and_validate(base_url=api_url, excluded_checks=[positive_data_acceptance])
    answered["rules"][response.status_code // 100] += 1


# --- the query API, over a real store (chDB) holding a few rows ----------------------------------

query_schema = schemathesis.openapi.from_dict(openapi_query())
query_schema.auth()(BearerAuth)
SECRET_SESSION = "s-secret"


@pytest.fixture(scope="module")
def query_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueryApi]:
    path = tmp_path_factory.mktemp("chdb")
    settings = Settings(
        chdb_path=path,
        home=path,
        default_retention_days=3650,
        query_port=free_port(),
        api_token=SecretStr(TOKEN),  # the rules API's proxy routes present the same token
    )
    sink = ClickHouseSink.from_settings(settings)
    now = int(time.time() * 1_000_000)
    rows = []
    for i, session in enumerate(["s-public", SECRET_SESSION, "s-public"]):
        record = normalize(
            {
                "timestamp": now + i,
                "service": "svc",
                "level": "ERROR",
                "message": f"m{i}",
                "session_id": session,
            }
        )
        line = RawLine(record, "logs.raw", 0, i, 0)
        rows.append(curate(line, ["error"], line, 3650))
    sink.write_batch(rows)
    sink.flush()
    server = store_query_server(settings, sink)
    assert server is not None
    server.start()
    try:
        yield QueryApi(f"http://127.0.0.1:{server.port}", server_token(settings))
    finally:
        server.stop()
        sink.close()


@query_schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_query_api_conforms_to_its_openapi(case: schemathesis.Case, query_api: QueryApi) -> None:
    # /sql takes any text as q by design and answers 400 for what the store refuses, so
    # "schema-valid data is accepted" cannot hold for it; every other check applies.
    response = case.call_and_validate(base_url=query_api.url, excluded_checks=[positive_data_acceptance])
    answered["query"][response.status_code // 100] += 1


INJECTIONS = [
    "' OR 1=1 --",
    "s-public' OR SessionId = 's-secret",
    "x'); DROP TABLE hindsight.logs; --",
    "{session:String}",
    "\\' OR 1=1 #",
    "s-public\x00' OR '1'='1",
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["session", "user", "service", "endpoint", "grep", "trigger", "rule"])
def test_sql_injection_in_filters_is_inert(query_api: QueryApi, field: str, value: str) -> None:
    api = query_api
    try:
        rows = remote_query(api, QueryFilters(**{field: value}))
    except QueryError as exc:  # refused outright (e.g. the NUL byte) is as good as inert
        assert "400" in str(exc)
    else:
        assert rows == []  # a bound value matched literally: nothing leaks
    # the table is intact and the secret session still there
    assert len(remote_query(api, QueryFilters(session=SECRET_SESSION))) == 1
    assert len(remote_query(api, QueryFilters(limit=100))) == 3


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE hindsight.logs",
        "INSERT INTO hindsight.logs (Body) VALUES ('x')",
        "ALTER TABLE hindsight.logs DELETE WHERE 1",
        "SELECT 1; DROP TABLE hindsight.logs",
        "SET readonly = 0",
        "SELECT * FROM hindsight.logs SETTINGS readonly = 0",
        "CREATE TABLE t (x UInt8) ENGINE = Memory",
    ],
)
def test_sql_endpoint_refuses_writes(query_api: QueryApi, statement: str) -> None:
    api = query_api
    with pytest.raises(QueryError, match="400"):
        remote_sql(api, statement, 10)
    assert remote_sql(api, "SELECT count() AS n FROM hindsight.logs", 10) == [{"n": 3}]
