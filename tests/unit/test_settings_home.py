"""HINDSIGHT_HOME is one absolute folder whatever the current directory: `stack status` run elsewhere
found no broker while one ran, because `.hindsight` was relative to where each command started."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings, default_home

REPO = Path(__file__).resolve().parents[2]


def test_the_default_home_is_the_checkouts_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HINDSIGHT_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().home == default_home() == REPO / ".hindsight"
    assert Settings().store_path == REPO / ".hindsight" / "chdb"


def test_a_relative_home_is_made_absolute_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HINDSIGHT_HOME", "work/here")
    settings = Settings()
    assert settings.home == tmp_path / "work" / "here" and settings.home.is_absolute()
    monkeypatch.chdir(REPO)
    assert settings.store_path == tmp_path / "work" / "here" / "chdb"  # not re-read from the new cwd
