"""ClickHouse TLS settings reach the wire: a local TLS server with its own CA (made by openssl) sees the
client certificate and the user; without the CA the handshake is refused with a hint, never retried."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.store.clickhouse import open_client, tls_options
from tests.conftest import unavailable


@pytest.fixture(autouse=True)
def _openssl_present() -> None:
    if shutil.which("openssl") is None:
        unavailable("openssl CLI needed to make certs")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", d / "ca.key", "-out", d / "ca.pem")  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", None)):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=hindsight-{name}",
                 "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr")  # fmt: skip
        extra: list[str | Path] = []
        if ext:
            (d / f"{name}.ext").write_text(ext + "\n")
            extra = ["-extfile", d / f"{name}.ext"]
        _openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", d / f"{name}.pem", *extra)  # fmt: skip
    return d


@pytest.fixture
def server(pki: Path) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            peer = self.connection.getpeercert()  # type: ignore[attr-defined]
            subject = dict(x[0] for x in peer["subject"]) if peer else {}
            seen.append(
                {"path": self.path, "headers": dict(self.headers), "client_cn": subject.get("commonName")}
            )
            body = b"Code: 516. DB::Exception: fake server: authentication failed. (AUTHENTICATION_FAILED)"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-ClickHouse-Exception-Code", "516")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_OPTIONAL  # records whether the client presented its certificate
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _settings(port: int, **tls: Any) -> Settings:
    return Settings(
        clickhouse_host="127.0.0.1",
        clickhouse_port=port,
        clickhouse_user="sink",
        clickhouse_password="pw",
        clickhouse_secure=True,
        **tls,
    )


def test_mutual_tls_reaches_the_server(pki: Path, server: tuple[int, list[dict[str, Any]]]) -> None:
    port, seen = server
    settings = _settings(
        port,
        clickhouse_ca_cert=pki / "ca.pem",
        clickhouse_client_cert=pki / "client.pem",
        clickhouse_client_key=pki / "client.key",
    )
    with pytest.raises(ConfigError, match=r"AUTHENTICATION_FAILED|fake server"):
        open_client(settings)
    assert seen, "the TLS handshake with our CA should have let the request through"
    assert seen[0]["client_cn"] == "hindsight-client"
    headers = seen[0]["headers"]
    # mutual TLS: ClickHouse authenticates the user by the certificate, so no password is sent
    assert headers["X-ClickHouse-User"] == "sink" and headers["X-ClickHouse-SSL-Certificate-Auth"] == "on"
    assert "pw" not in str(headers)


def test_password_auth_over_verified_tls(pki: Path, server: tuple[int, list[dict[str, Any]]]) -> None:
    port, seen = server
    with pytest.raises(ConfigError, match=r"fake server"):
        open_client(_settings(port, clickhouse_ca_cert=pki / "ca.pem"))
    assert seen and seen[0]["client_cn"] is None  # no client certificate configured, none presented
    assert "Authorization" in seen[0]["headers"] or seen[0]["headers"].get("X-ClickHouse-Key") == "pw"


def test_without_the_ca_the_handshake_is_refused(server: tuple[int, list[dict[str, Any]]]) -> None:
    port, seen = server
    with pytest.raises(ConfigError, match="HINDSIGHT_CLICKHOUSE_CA_CERT"):
        open_client(_settings(port))
    assert seen == []  # nothing, not even the user name, went out before the certificate checked


def test_https_url_and_server_name_and_missing_files(pki: Path) -> None:
    options = tls_options(Settings(clickhouse_url="https://u:p@ch.example:8443", clickhouse_server_name="ch"))
    assert options["secure"] is True and options["verify"] is True and options["server_host_name"] == "ch"
    assert tls_options(Settings(clickhouse_url="http://ch:8123"))["secure"] is False
    with pytest.raises(ConfigError, match="does not exist"):
        tls_options(Settings(clickhouse_host="ch", clickhouse_ca_cert=pki / "missing.pem"))
    assert "client.key" not in repr(Settings(clickhouse_client_key=pki / "client.key"))
