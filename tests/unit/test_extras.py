"""Optional extras: a command whose client library is not installed fails with one line naming the
pip command; a missing module that no extra brings keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.extras import EXTRAS, missing, require
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """As if `modules` were not installed (an import of them raises ModuleNotFoundError)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "chdb")
    with pytest.raises(ConfigError) as err:
        require("chdb", "the embedded store")
    assert str(err.value) == (
        "the embedded store needs the 'embedded' extra, which is not installed: "
        "pip install 'log-hindsight[embedded]'"
    )
    assert require("json", "json").dumps([]) == "[]"


def test_a_module_no_extra_brings_is_not_disguised() -> None:
    assert missing(ModuleNotFoundError("no", name="yaml_not_here"), "x") is None
    with pytest.raises(ModuleNotFoundError):
        require("module_that_does_not_exist", "x")


def test_each_sink_and_the_embedded_store_say_which_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from connectors import load_sink
    from pipeline.store.clickhouse import open_client

    for sink, module, extra in (("postgres", "psycopg", "postgres"), ("redis", "redis", "redis")):
        monkeypatch.delitem(
            sys.modules, f"connectors.{'redis_recent' if sink == 'redis' else sink}", raising=False
        )
        hide(monkeypatch, module)
        with pytest.raises(ConfigError, match=rf"the {sink} sink needs .*log-hindsight\[{extra}\]"):
            load_sink(sink)
    hide(monkeypatch, "chdb")
    with pytest.raises(ConfigError, match=r"embedded store .*log-hindsight\[embedded\]"):
        open_client(Settings(chdb_path=tmp_path / "store"))


def test_the_grpc_receiver_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.api.otlp_grpc import OtlpGrpcServer

    hide(monkeypatch, "grpc")
    with pytest.raises(
        ConfigError, match=r"gRPC receiver .*HINDSIGHT_OTLP_GRPC_PORT=0.*log-hindsight\[grpc\]"
    ):
        OtlpGrpcServer(Settings(), receiver=None)  # type: ignore[arg-type]


def test_the_cli_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['chdb'] = None; from pipeline.ops.cli import main; "
        "raise SystemExit(main(['migrate']))"
    )
    env = {**os.environ, "HINDSIGHT_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith("pip install 'log-hindsight[embedded]'"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_extras_in_pyproject_bring_what_the_code_expects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for module, extra in EXTRAS.items():
        assert extra in extras, extra
        assert module.split("_")[0] not in core, f"{module} is a core dependency, not an extra"
    assert "log-hindsight[all]" in extras["dev"]
    assert sorted(extras["all"][0].split("[")[1].rstrip("]").split(",")) == sorted(set(EXTRAS.values()))
    for package in ("confluent-kafka", "faust-streaming", "avro", "fastavro", "clickhouse-connect"):
        assert package in core  # the design card's five stay core
