"""Support captures: a user's recent raw lines into curated now, and a rule that follows the user."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.control.rules import check_rule
from pipeline.engine.curate import curate
from pipeline.engine.model import Trigger
from pipeline.replay.rawscan import scan_raw
from pipeline.rules.store import RuleStore
from pipeline.settings import Settings
from pipeline.types import RawLine
from pipeline.wire.curated_topic import CuratedProducer
from pipeline.wire.raw import Where

log = logging.getLogger(__name__)

CAPTURE_PRIORITY = 10_000  # a support capture outranks every drop


def capture_description(user_id: str, reason: str) -> str:
    """The capture rule's description: the user, and why when a reason was given (no dangling colon)."""
    text = f"support capture of user {user_id}"
    return (f"{text}: {reason.strip()}" if reason.strip() else text)[:2000]


def start_capture(
    settings: Settings,
    user_id: str,
    lookback_s: float,
    follow_s: float,
    reason: str = "",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """A support capture: the user's lines of the last `lookback_s` from logs.raw into curated now,
    and every new line of the user for `follow_s` (a rule that expires by itself). Every line it
    emits carries the capture id as a tag, its trigger id and a rule id."""
    capture_id = f"capture-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    until = now + timedelta(seconds=follow_s)
    rule = check_rule(
        settings,
        {
            "id": capture_id,
            "priority": CAPTURE_PRIORITY,
            "description": capture_description(user_id, reason),
            "match": {"all": [{"user_id": user_id}]},
            "active_until": until.isoformat(),
            "actions": {"level": "TRACE", "tag": {"tags": [capture_id]}},
        },
    )
    RuleStore(settings).put(rule)  # the follow-up starts first, so nothing falls between the two
    history = dump_user_history(settings, user_id, capture_id, lookback_s, now, progress)
    log.info(
        "support capture id=%s user=%s history_lines=%s follow_until=%s", capture_id, user_id, history, until
    )
    return {
        "capture_id": capture_id,
        "user_id": user_id,
        "history_lines": history,
        "since": (now - timedelta(seconds=lookback_s)).isoformat(),
        "since_us": int((now - timedelta(seconds=lookback_s)).timestamp() * 1_000_000),
        "follow_until": until.isoformat(),
    }


def dump_user_history(
    settings: Settings,
    user_id: str,
    capture_id: str,
    lookback_s: float,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Emit the user's raw lines since now - lookback into curated, tagged with the capture id."""
    since_us = int((now.timestamp() - lookback_s) * 1_000_000)
    writer = CuratedProducer(settings, key=user_id.encode())
    where = Where(since_us, 2**62, (("user_id", user_id),))
    for msg in scan_raw(settings, since_us // 1000 - 60_000, progress=progress, where=where):
        for rec, index in zip(msg.records, msg.indices, strict=True):
            line = RawLine(rec, settings.raw_topic, msg.partition, msg.offset, index)
            row = curate(
                line,
                ["capture"],
                Trigger(capture_id, msg.offset, ("capture",)),
                settings.default_retention_days,
            )
            row["tags"] = [capture_id]
            row["rule_ids"] = [capture_id]
            writer.add_many([row])
    writer.close("support capture history", settings.request_timeout_s * 4)
    return writer.rows
