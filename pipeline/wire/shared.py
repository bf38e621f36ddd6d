"""The shared-state topic's records: one change of a worker process's shared state (a capture, an auth
failure, a part of an endpoint's latency window, a template learned), JSON, validated on the way in."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import orjson

from pipeline.errors import DecodeError


class _Capture(msgspec.Struct, tag="capture", tag_field="kind", forbid_unknown_fields=True):
    origin: str
    field: Literal["endpoint", "user_id", "service"]
    value: str
    since: int
    until: int
    trigger_id: str
    trigger_offset: int
    reasons: list[str]


class _Auth(msgspec.Struct, tag="auth", tag_field="kind", forbid_unknown_fields=True):
    origin: str
    user: str
    ts: int
    ref: str
    topic: str
    partition: int


class _Baseline(msgspec.Struct, tag="baseline", tag_field="kind", forbid_unknown_fields=True):
    origin: str
    endpoint: str
    window: int
    sketch: dict[str, int]


class _Template(msgspec.Struct, tag="template", tag_field="kind", forbid_unknown_fields=True):
    origin: str
    service: str
    scope: str  # the endpoint, or "" when templates are new per service
    template_id: str
    ts: int


_DECODER = msgspec.json.Decoder(_Capture | _Auth | _Baseline | _Template)


def encode_change(change: dict[str, Any], origin: str) -> bytes:
    """One change from this process's outbox, signed with its origin."""
    return orjson.dumps({**change, "origin": origin})


def decode_change(value: bytes | None) -> dict[str, Any]:
    """A shared-state record as the engine's apply_shared takes it; DecodeError if it is not one."""
    try:
        item = _DECODER.decode(value or b"")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_shared_state", f"not a shared-state change: {exc}") from None
    out = msgspec.structs.asdict(item)
    out["kind"] = type(item).__struct_config__.tag
    return out
