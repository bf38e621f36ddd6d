"""Lines given one by one (records from logs.raw, validated structs, tests) as the Columns the engine's
per-line loop reads: grouped by session, in order of each session's first line."""

from __future__ import annotations

from pipeline.engine.templates import Templates
from pipeline.types import FLAG_SECURITY, FLAG_TIMEOUT, Columns, LineView, line_session_key


def columns_of(
    lines: list[LineView],
    idx: list[int] | None,
    encoded: list[bytes] | None,
    timeout_attribute: str,
    templates: Templates | None,
) -> Columns:
    """`lines` of one message as columns; `idx` their positions in it (None: 0..n-1), `encoded` their
    encoded forms; `templates` fills a missing template id (None: the catalog is off, ids stay "")."""
    sid = lines[0].session_id
    if sid and all(r.session_id == sid for r in lines):
        keys, counts = [sid], [len(lines)]  # one session per message
    else:
        # lines of many sessions: ingest and the publisher batch per partition
        where: dict[str, list[int]] = {}
        for i, rec in enumerate(lines):
            key = rec.session_id or line_session_key(rec)
            group = where.get(key)
            if group is None:
                where[key] = [i]
            else:
                group.append(i)
        keys = list(where)
        order = [i for group in where.values() for i in group]
        counts = [len(group) for group in where.values()]
        lines = [lines[i] for i in order]
        idx = order if idx is None else [idx[i] for i in order]  # each line keeps its place
        if encoded is not None:
            encoded = [encoded[i] for i in order]
    if templates is None:
        tids = [""] * len(lines)
    else:
        tids = [r.template_id or templates.id_of(r.message) for r in lines]
    return Columns(
        keys,
        counts,
        [r.timestamp for r in lines],
        [r.level for r in lines],
        [r.service for r in lines],
        [r.endpoint for r in lines],
        [r.user_id for r in lines],
        [r.latency_ms for r in lines],
        [r.status_code for r in lines],
        [
            (FLAG_SECURITY if r.security_flags else 0)
            | (FLAG_TIMEOUT if r.attributes and timeout_attribute in r.attributes else 0)
            for r in lines
        ],
        tids,
        [len(r.message) for r in lines],
        timeout_attribute,
        views=lines,
        encoded=encoded,
        idx=idx,
    )
