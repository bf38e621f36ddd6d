"""The configuration reference (docs/configuration.md), generated from the settings' fields and their
descriptions so it cannot drift: `python -m pipeline.ops.config_reference > docs/configuration.md`."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from pipeline.settings import Settings

HEADER = """# Configuration

Every setting is an environment variable with the `HINDSIGHT_` prefix; a few also take their
conventional unprefixed name (`KAFKA_BOOTSTRAP_SERVERS`, `CLICKHOUSE_URL`, ...). Lists and mappings are
JSON. A TOML file of the same settings by name (`lookback_s = 30`), given with `hindsight --config FILE`
or `HINDSIGHT_CONFIG`, lies under the environment. An unknown `HINDSIGHT_*` variable or file key is
refused with the nearest valid name; `hindsight config show` prints the effective settings, secrets
masked. Generated from `pipeline/settings.py` by `make docs`; a test fails when this file and the
settings differ.
"""


def _sections() -> list[tuple[str, list[str]]]:
    """The settings' fields under the section comments of their source (`# --- Kafka ---`)."""
    out: list[tuple[str, list[str]]] = [("General", [])]
    for line in inspect.getsource(Settings).splitlines():
        header = re.match(r"\s*# --- (.+?) -+\s*$", line)
        if header:
            out.append((header.group(1).strip(), []))
            continue
        field = re.match(r"    ([a-z_][a-z0-9_]*)\s*:", line)
        if field and field.group(1) in Settings.model_fields:
            out[-1][1].append(field.group(1))
    return [(title, names) for title, names in out if names]


def _variables(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else []
    names = [a for a in choices if isinstance(a, str) and a.isupper()]
    return " or ".join(f"`{n}`" for n in names) if names else f"`HINDSIGHT_{name.upper()}`"


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])  # a machine-dependent default, described
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is None:
        return "unset"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    text = json.dumps(value) if isinstance(value, dict | list | bool) else str(value)
    return f"`{text}`"


def render() -> str:
    lines = [HEADER]
    for title, names in _sections():
        lines += [f"\n## {title}\n", "| variable | default | meaning |", "|---|---|---|"]
        for name in names:
            info = Settings.model_fields[name]
            text = (info.description or "").replace("|", "\\|")
            lines.append(f"| {_variables(name, info)} | {_default(info)} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
