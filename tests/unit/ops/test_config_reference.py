"""The configuration reference is generated from the settings and committed: it lists every field."""

from __future__ import annotations

from pathlib import Path

from pipeline.ops.config_reference import render
from pipeline.settings import Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_committed_reference_is_the_generated_one() -> None:
    assert DOC.read_text() == render(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_listed_with_its_description() -> None:
    text = render()
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no description"
        assert f"`HINDSIGHT_{name.upper()}`" in text and info.description.replace("|", "\\|") in text
