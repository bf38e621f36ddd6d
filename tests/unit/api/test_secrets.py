"""Secrets never show: not in the settings' repr, not in what the rules API logs."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest
from pydantic import SecretStr

from pipeline.ops.services import settings_env
from pipeline.settings import Settings

SECRETS = {
    "clickhouse_url": "https://u:ch-url-pass@ch.example:8443",
    "clickhouse_password": "ch-pass-1",
    "kafka_extra_config": {"security.protocol": "SASL_SSL", "sasl.password": "kafka-pass-2"},
    "api_token": SecretStr("api-token-3"),
    "webhook_secret": SecretStr("hook-secret-4"),
    "postgres_dsn": SecretStr("postgresql://u:pg-pass-5@db/x"),
    "redis_url": SecretStr("redis://:redis-pass-6@r:6379/0"),
}
VALUES = (
    "ch-url-pass",
    "ch-pass-1",
    "kafka-pass-2",
    "api-token-3",
    "hook-secret-4",
    "pg-pass-5",
    "redis-pass-6",
)


def test_settings_repr_and_str_hide_every_secret() -> None:
    settings = Settings(**SECRETS)  # type: ignore[arg-type]
    shown = repr(settings) + str(settings)
    assert not [v for v in VALUES if v in shown]
    env = settings_env(settings)  # a child process still gets the real values
    assert (
        env["HINDSIGHT_API_TOKEN"] == "api-token-3" and "kafka-pass-2" in env["HINDSIGHT_KAFKA_EXTRA_CONFIG"]
    )


def test_rules_api_never_logs_the_token(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.api.base import DEFAULT_LIMITS, Server
    from pipeline.api.control import RulesView, control_api

    # a client sends a token (here not the server's): the refusal is logged, the token is not
    app = control_api(Settings(api_token=SecretStr("the-server-token")), RulesView(None)).app()
    server = Server("rules API", app, "127.0.0.1", 0, "HINDSIGHT_API_PORT", DEFAULT_LIMITS).start()
    caplog.set_level(logging.DEBUG)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/rules")
        req.add_header("Authorization", "Bearer api-token-3")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401
    finally:
        server.stop()
    assert caplog.records and "api-token-3" not in caplog.text


def test_kafka_security_settings_reach_the_worker_and_other_clients() -> None:
    import faust

    from pipeline.errors import ConfigError
    from pipeline.worker.app import faust_credentials

    sasl = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "kafka-pass-2",
    }
    settings = Settings(kafka_extra_config=sasl)
    creds = faust_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, str(creds.mechanism.value)) == (
        "svc",
        "kafka-pass-2",
        "SCRAM-SHA-512",
    )
    assert (
        settings.kafka_client_config()["sasl.password"] == "kafka-pass-2"
    )  # librdkafka clients get it as is
    tls = faust_credentials(Settings(kafka_extra_config={"security.protocol": "SSL"}))
    assert isinstance(tls, faust.SSLCredentials)
    assert faust_credentials(Settings()) is None
    with pytest.raises(ConfigError):
        faust_credentials(Settings(kafka_extra_config={"security.protocol": "KERBEROS"}))
