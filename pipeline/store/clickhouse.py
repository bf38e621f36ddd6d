"""Opening the ClickHouse store (chDB in-process by default, or a server) and applying its migrations."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import weakref
from importlib.resources import files
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from pipeline.errors import ConfigError, RetryableSinkError, StoreBusy
from pipeline.extras import require
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# package data (deploy/clickhouse/ in the checkout, through the pipeline/migrations symlink)
MIGRATIONS = Path(str(files("pipeline") / "migrations"))


def open_client(settings: Settings) -> Client:
    """A clickhouse-connect client: a server when configured, else chDB at the store path."""
    try:
        if settings.uses_server:
            return clickhouse_connect.get_client(
                dsn=settings.clickhouse_url,
                host=settings.clickhouse_host,
                port=settings.clickhouse_port or 0,
                username=settings.clickhouse_user,
                password=settings.clickhouse_password,
                connect_timeout=5,
                send_receive_timeout=60,
                **tls_options(settings),
            )
        require("chdb", "the embedded store (used when HINDSIGHT_CLICKHOUSE_URL names no server)")
        path = settings.store_path
        path.mkdir(parents=True, exist_ok=True)
        _hold_store(path.resolve())
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()))
        except BaseException:
            _let_go(path.resolve())
            raise
        weakref.finalize(client, _let_go, path.resolve())  # when the client is gone, so is the hold
        return client
    except ClickHouseError as exc:
        text = str(exc)
        if "Cannot lock file" in text or "already running" in text:
            raise StoreBusy(
                f"the embedded store {settings.store_path} is open in another process "
                "(a running sink answers queries on its query API)"
            ) from None
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
            raise ConfigError(
                f"TLS to ClickHouse failed: {_ssl_reason(text)}; set HINDSIGHT_CLICKHOUSE_CA_CERT to the CA "
                "that signed the server's certificate (or HINDSIGHT_CLICKHOUSE_SERVER_NAME)"
            ) from None
        if isinstance(exc, OperationalError):
            raise RetryableSinkError(f"ClickHouse unreachable: {text.splitlines()[0]}") from exc
        raise ConfigError(f"cannot open ClickHouse: {text.splitlines()[0]}") from exc


_HELD: dict[Path, tuple[int, int]] = {}  # embedded stores held here: path -> (lock file fd, clients)


def _hold_store(path: Path) -> None:
    """Take the embedded store for this process, or StoreBusy naming the process that holds it.

    chDB allows one process per data folder; a second one fails deep inside chDB after printing its
    internals. A lock file of our own (with the holder's PID) fails first, with a clear answer. The
    lock lasts while a client of this process is open on the folder."""
    held = _HELD.get(path)
    if held is not None:
        _HELD[path] = (held[0], held[1] + 1)
        return
    lock = path / "hindsight.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreBusy(
            f"the embedded store {path} is held by another process (PID {holder}), most likely a "
            "running sink: it answers queries on its query API (HINDSIGHT_QUERY_PORT)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[path] = (fd, 1)


def _let_go(path: Path) -> None:
    held = _HELD.get(path)
    if held is None:
        return
    fd, clients = held
    if clients > 1:
        _HELD[path] = (fd, clients - 1)
        return
    del _HELD[path]
    os.close(fd)  # releases the lock


def tls_options(settings: Settings) -> dict[str, Any]:
    """get_client's TLS keywords from the settings (an https:// URL turns TLS on too)."""
    options: dict[str, Any] = {
        "secure": settings.clickhouse_secure or (settings.clickhouse_url or "").startswith("https://"),
        "verify": settings.clickhouse_verify,
    }
    for key, value in (
        ("ca_cert", settings.clickhouse_ca_cert),
        ("client_cert", settings.clickhouse_client_cert),
        ("client_cert_key", settings.clickhouse_client_key),
    ):
        if value is not None:
            if not value.is_file():
                raise ConfigError(f"ClickHouse TLS {key} file {value} does not exist")
            options[key] = str(value)
    if settings.clickhouse_server_name:
        options["server_host_name"] = settings.clickhouse_server_name
    return options


def _ssl_reason(text: str) -> str:
    m = re.search(r"\[SSL[^\]]*\][^)'\"]*", text)
    return m.group(0) if m else text.splitlines()[0][:200]


def migrate(client: Client, database: str) -> list[str]:
    """Apply deploy/clickhouse/*.sql in order, once each; returns the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows}
    applied = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        version = path.stem
        if version in done:
            continue
        for statement in _statements(path.read_text().replace("{db}", database)):
            _command(client, statement)
        client.insert(f"{database}.schema_migrations", [[version]], column_names=["version"])
        applied.append(version)
        log.info("migration applied version=%s database=%s", version, database)
    return applied


# Table settings newer than some servers: a server that does not know one has no check for it either.
OPTIONAL_SETTINGS = (", allow_dimensions_outside_sorting_key = 1",)


def _command(client: Client, statement: str) -> None:
    try:
        client.command(statement)
    except ClickHouseError as exc:
        optional = [s for s in OPTIONAL_SETTINGS if s in statement and s.split()[1] in str(exc)]
        if not optional:
            raise
        for setting in optional:
            statement = statement.replace(setting, "")
        client.command(statement)


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
