"""Every rule the README and docs show is a valid rule, as written (a reader copies them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.rules.model import validate_rule

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def rule_examples() -> list[tuple[str, dict[str, object]]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```json\n(.*?)```", doc.read_text(), re.S):
            data = json.loads(block)
            if isinstance(data, dict) and "actions" in data:
                found.append((f"{doc.name}:{data.get('id')}", data))
    return found


def test_the_docs_show_rules() -> None:
    assert len(rule_examples()) >= 2


@pytest.mark.parametrize(("where", "rule"), rule_examples(), ids=[w for w, _ in rule_examples()])
def test_each_rule_example_validates(where: str, rule: dict[str, object]) -> None:
    validate_rule(rule)
