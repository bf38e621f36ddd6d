"""The optional C hot loops: used only while built from their current source, never when disabled."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline import compiled
from pipeline.ops import doctor
from tests.conftest import unavailable


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HINDSIGHT_NATIVE", raising=False)  # these tests set it themselves
    if any(compiled.built(name) is None for name in compiled.SOURCES):
        unavailable("the C fast paths are not built here (make native builds them)")


@pytest.mark.usefixtures("built")
def test_a_build_of_the_current_source_loads() -> None:
    for name in compiled.SOURCES:
        module = compiled.load(name)
        assert module is not None and compiled.source_hash(name) == module.SOURCE_SHA256
    check = doctor._fast_paths()
    assert (
        check.status == doctor.OK and "_frames compiled" in check.detail and "_route compiled" in check.detail
    )


@pytest.mark.usefixtures("built")
def test_a_build_of_another_source_is_not_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edited = tmp_path / "_frames.c"
    edited.write_bytes(compiled.SOURCES["pipeline.wire._frames"].read_bytes() + b"\n/* edited */\n")
    monkeypatch.setitem(compiled.SOURCES, "pipeline.wire._frames", edited)
    with caplog.at_level(logging.WARNING, logger="pipeline.compiled"):
        assert compiled.load("pipeline.wire._frames") is None
    assert "older than its source" in caplog.text
    check = doctor._fast_paths()
    assert (check.status, check.fix) == (doctor.WARN, "make native") and "_frames stale" in check.detail


def test_a_module_not_built_or_disabled_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HINDSIGHT_NATIVE", raising=False)
    source = tmp_path / "_nothing.c"
    source.write_bytes(b"/* never built */\n")
    monkeypatch.setitem(compiled.SOURCES, "pipeline.wire._nothing", source)
    assert compiled.state("pipeline.wire._nothing") == "absent"
    assert compiled.load("pipeline.wire._nothing") is None
    monkeypatch.setenv("HINDSIGHT_NATIVE", "0")
    assert {compiled.state(name) for name in compiled.SOURCES} == {"disabled"}
    assert all(compiled.load(name) is None for name in compiled.SOURCES)
    assert doctor._fast_paths().status == doctor.OK
