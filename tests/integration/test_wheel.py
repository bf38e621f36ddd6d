"""The package as a wheel, installed outside the checkout: schemas and migrations travel as package
data, `hindsight --version` and `hindsight migrate` work, and one line goes publish -> ingest ->
worker -> ClickHouse sink -> query with every process running from the installed wheel."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import orjson
import pytest

from pipeline.kafka import ensure_topics
from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this checkout. Its dependencies come from the test
    environment's site-packages, added as a plain path: that folder's .pth files (the editable
    install of this checkout among them) are not run, so `pipeline` can only come from the wheel."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(root / "dist")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = list((root / "dist").glob("log_hindsight-*.whl"))
    venv.create(root / "venv", with_pip=False)
    target = next((root / "venv" / "lib").glob("python3.*")) / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (target / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root / "venv" / "bin" / "python"


def run(python: Path, settings: Settings, cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        [str(python), "-m", "pipeline.ops.cli", *args],
        input=stdin, capture_output=True, timeout=120, cwd=cwd, env=env_of(settings),
    )  # fmt: skip
    assert proc.returncode == 0, (args, proc.stderr.decode()[-2000:])
    return proc.stdout.decode()


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **settings_env(settings)}


def test_the_installed_wheel_runs_outside_the_checkout(installed: Path, ns: Settings, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(installed), "-c", "import pipeline.wire.avro as a; print(a.__file__, a.SCHEMA_DIR)"],
        capture_output=True, text=True, cwd=tmp_path, env=env_of(ns), timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    module, schemas = probe.stdout.split()
    assert str(REPO) not in module and str(REPO) not in schemas, probe.stdout  # the wheel's own files
    assert run(installed, ns, tmp_path, "--version").startswith("hindsight 0.")
    # the store and protocol clients are extras: a core install stays small
    [wheel] = (installed.parents[2] / "dist").glob("log_hindsight-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [x for x in zf.read(meta).decode().splitlines() if x.startswith("Requires-Dist:")]
    for package, extra in (
        ("chdb", "embedded"),
        ("psycopg", "postgres"),
        ("redis", "redis"),
        ("grpcio", "grpc"),
    ):
        [req] = [r for r in requires if r.split()[1].startswith(package)]
        assert f'extra == "{extra}"' in req, req
    assert any(r.split()[1].startswith("faust-streaming") and "extra" not in r for r in requires)

    settings = ns.model_copy(update={"home": tmp_path / "home", "chdb_path": tmp_path / "store"})
    applied = run(installed, settings, tmp_path, "migrate")
    assert "001_logs" in applied and "005_otel_logs_view" in applied
    ensure_topics(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    children = []
    for name, args in (("worker", ["worker"]), ("sink", ["sink", "clickhouse"]), ("ingest", ["ingest"])):
        with open(logs / f"{name}.log", "wb") as out:
            children.append(
                subprocess.Popen(
                    [str(installed), "-m", "pipeline.ops.cli", "--log-level", "INFO", *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    env=env_of(settings),
                )
            )
    try:
        session = f"wheel-{settings.app_id}"
        line = {"service": "wheel", "level": "ERROR", "message": "from the wheel", "session_id": session}
        deadline = time.monotonic() + 120
        while "ready" not in (logs / "sink.log").read_text() and time.monotonic() < deadline:
            assert all(c.poll() is None for c in children), (logs / "sink.log").read_text()[-2000:]
            time.sleep(0.5)
        run(installed, settings, tmp_path, "publish", stdin=orjson.dumps(line))

        def stored() -> list[dict[str, object]] | None:
            for c in children:
                assert c.poll() is None, [(p.name, p.read_text()[-1500:]) for p in logs.iterdir()]
            out = run(installed, settings, tmp_path, "query", "--session", session, "--format", "jsonl")
            rows = [orjson.loads(x) for x in out.splitlines() if x]
            return rows or None

        rows = eventually(stored, 120, "the line, through the pipeline run from the wheel")
        assert [r["message"] for r in rows] == ["from the wheel"]
    finally:
        for c in children:
            c.terminate()
        for c in children:
            c.wait(30)
