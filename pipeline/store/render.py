"""Rendering query rows for people (table) and machines (jsonl, csv)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

TABLE_COLUMNS = ("timestamp", "service", "level", "session_id", "endpoint", "message", "trigger_reasons")


def format_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS, width: int = 70
) -> str:
    if not rows:
        return "(no rows)"

    def cell(row: dict[str, Any], col: str) -> str:
        value = row.get(col)
        if isinstance(value, list):
            value = ",".join(map(str, value))
        text = "" if value is None else str(value)
        if col == "timestamp" and text.endswith("+00:00"):
            text = text[:23] + "Z"  # milliseconds, and the zone (UTC) said
        return text if len(text) <= width else text[: width - 1] + "…"

    cells = [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def format_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "\n".join(orjson.dumps(r).decode() for r in rows)


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    """RFC 4180 CSV with a header; lists and maps as JSON."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = list(rows[0])
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                orjson.dumps(v).decode() if isinstance(v, list | dict) else "" if v is None else v
                for v in (row.get(c) for c in columns)
            ]
        )
    return out.getvalue().rstrip("\n")
