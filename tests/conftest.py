"""Shared fixtures: one real Kafka broker per test session (or KAFKA_BOOTSTRAP_SERVERS), namespaces,
and private PostgreSQL and Redis servers for their sinks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def _scrub_project_environment() -> str | None:
    """Remove every variable the settings read (HINDSIGHT_*, CLICKHOUSE_URL, KAFKA_BOOTSTRAP_SERVERS, any
    case) for the whole session: a token or store URL set in the shell must not change what the tests
    talk to. An existing cluster named by KAFKA_BOOTSTRAP_SERVERS is returned, for the kafka fixture
    alone. Switches of the test run itself (HINDSIGHT_NATIVE, HINDSIGHT_CHROMIUM) stay."""
    cluster = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("HINDSIGHT_KAFKA_BOOTSTRAP_SERVERS")
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        names.add(f"HINDSIGHT_{name}".upper())
        alias = info.validation_alias
        for choice in getattr(alias, "choices", [alias]):
            if isinstance(choice, str):
                names.add(choice.upper())
    for key in list(os.environ):
        if key.upper() in names:
            del os.environ[key]
    return cluster


CLUSTER = _scrub_project_environment()


def unavailable(what: str) -> None:
    """A tool or build a test needs is missing: skipped on a developer's machine, a failure under
    CI=true (CI must have everything, so a skip there would hide a test that never ran)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: a test may not skip)")
    pytest.skip(what)


def free_port(pair: bool = False) -> int:
    """A free port on 127.0.0.1 (and port + 1 free too when pair is set)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair or port >= 65535:
            return port
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Base settings pointing at a real broker: KAFKA_BOOTSTRAP_SERVERS, else one started here."""
    home = tmp_path_factory.mktemp("hindsight-home")
    cache = REPO / ".hindsight" / "cache"
    if CLUSTER:
        yield Settings(home=home, cache_dir=cache, kafka_bootstrap_servers=CLUSTER)
        return
    from pipeline.ops.stack import LocalBroker

    settings = Settings(home=home, cache_dir=cache, kafka_port=free_port(pair=True), kafka_heap="512m")
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings
    finally:
        broker.stop()


@pytest.fixture
def ns(kafka: Settings, tmp_path: Path) -> Settings:
    """Settings with topics, groups, store and ports of this test alone."""
    run = uuid.uuid4().hex[:8]
    return kafka.namespaced(
        f"t{run}",
        chdb_path=tmp_path / "chdb",
        query_port=free_port(),
        partitions=3,
        publish_linger_ms=20,
    )


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


class PrivatePostgres:
    """A private PostgreSQL (Debian's binaries, `make services`) on a free port, which a test may stop
    (fast shutdown: sessions cut, as in a crash of the server) and start again on the same data."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL binaries missing: run `make services`")
        self.bindir = bins[-1].parent
        # outside pytest's private (0700) temp folders: the postgres user must reach it when we are root
        self.home = Path(tempfile.mkdtemp(prefix="hindsight-pg-"))
        self.data = self.home / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            self.home.chmod(0o777)
        subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                        "-U", "hindsight"], check=True, capture_output=True)  # fmt: skip
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dsn = f"postgresql://hindsight@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.as_user, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.proc, "postgres")
        time.sleep(0.5)  # accepting connections a moment after the socket opens

    def stop(self) -> None:
        """Fast shutdown (open sessions cut), through pg_ctl: a signal to `runuser` is not passed on."""
        if self.proc is not None:
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                            "-w", "stop"], check=True, capture_output=True, timeout=60)  # fmt: skip
            self.proc.wait(30)
            self.proc = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PrivatePostgres) -> str:
    """The private PostgreSQL's DSN."""
    return postgres_server.dsn


class PrivateRedis:
    """A private Redis (Debian's redis-server, `make services`) on a free port, with an append-only
    file so that what it acknowledged survives a stop and start (a test's outage)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: PrivateRedis) -> str:
    """The private Redis's URL."""
    return redis_server.url
