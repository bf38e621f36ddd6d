"""The shapes log shippers and logging libraries publish, mapped onto the canonical record before
normalising: Fluent Bit (`log`), Vector's kubernetes_logs events, ECS (`log.level`), structlog
(`event`), pino (numeric levels), python-json-logger, loguru's serialized records; then the
deployment's own field map (renames from dotted paths, defaults). Pure functions, no I/O.

A shape is recognised by the keys only it has, checked in the order below; an object that matches
none is taken as it is (the canonical shape and its aliases). Where a shipper wraps the
application's line (Fluent Bit's `log`, Vector's `message`) and that line is itself a JSON object,
its fields are merged in: the application's structure wins over the shipper's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

# pino's numeric levels (and bunyan's, the same numbers)
PINO_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}
# loguru's level numbers, for records whose level has no name we know
LOGURU_LEVELS = {5: "TRACE", 10: "DEBUG", 20: "INFO", 25: "INFO", 30: "WARN", 40: "ERROR", 50: "FATAL"}


@dataclass(frozen=True)
class FieldMap:
    """A deployment's own mapping, applied after the shape presets.

    `renames` maps a dotted source path (`kubernetes.pod_labels.app`) to a canonical field (`service`);
    the first path present wins when several name one field. `defaults` fill canonical fields still
    missing (a service for lines without one, a level for plain text lines)."""

    renames: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    presets: bool = True  # recognise the shippers' shapes below


DEFAULT_FIELD_MAP = FieldMap()


def lookup(obj: Mapping[str, Any], path: str) -> Any:
    """A dotted path in nested objects; a key that itself contains dots (ECS's flat form) matches too."""
    if path in obj:
        return obj[path]
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _inner_json(text: Any) -> dict[str, Any] | None:
    """The application's own JSON line wrapped by a shipper, if the text is one."""
    if isinstance(text, str) and text[:1] == "{":
        try:
            inner = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        return inner if isinstance(inner, dict) else None
    return None


def _merge_inner(out: dict[str, Any], text: Any) -> dict[str, Any]:
    inner = _inner_json(text)
    if inner is None:
        out["message"] = text
        return out
    adapted = adapt_shape(inner)[1]  # the wrapped line may itself be structlog, pino, ECS...
    return {**out, **adapted}


def _kubernetes(out: dict[str, Any], k8s: Any) -> None:
    """Kubernetes metadata as attributes; the app label (or container) names the service."""
    if not isinstance(k8s, Mapping):
        return
    labels = k8s.get("pod_labels") or k8s.get("labels") or {}
    if not isinstance(labels, Mapping):
        labels = {}
    service = labels.get("app.kubernetes.io/name") or labels.get("app") or k8s.get("container_name")
    if service and "service" not in out:
        out["service"] = service
    attrs = out.setdefault("attributes", {})
    for key, name in (("pod_name", "k8s.pod.name"), ("pod_namespace", "k8s.namespace.name"),
                      ("namespace_name", "k8s.namespace.name"), ("container_name", "k8s.container.name"),
                      ("host", "k8s.node.name"), ("pod_node_name", "k8s.node.name")):  # fmt: skip
        value = k8s.get(key)
        if isinstance(value, str):
            attrs.setdefault(name, value)


def _fluent_bit(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in ("log", "kubernetes", "date")}
    if "@timestamp" not in out and "date" in obj:
        out["timestamp"] = obj["date"]  # Fluent Bit's default time key when json_date_key is unset
    _kubernetes(out, obj.get("kubernetes"))
    return _merge_inner(out, obj["log"])


def _vector_kubernetes(obj: dict[str, Any]) -> dict[str, Any]:
    drop = ("message", "kubernetes", "file", "source_type", "stream")
    out = {k: v for k, v in obj.items() if k not in drop}
    _kubernetes(out, obj.get("kubernetes"))
    return _merge_inner(out, obj["message"])


def _loguru(obj: dict[str, Any]) -> dict[str, Any]:
    record = obj["record"]
    level = record.get("level") or {}
    name = level.get("name") if isinstance(level, Mapping) else level
    if isinstance(level, Mapping) and name not in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR",
                                                   "CRITICAL"):  # fmt: skip
        number = level.get("no")
        name = LOGURU_LEVELS.get(number, name) if isinstance(number, int) else name
    when = record.get("time") or {}
    out: dict[str, Any] = {
        "message": record.get("message", obj.get("text", "")),
        "level": "INFO" if name == "SUCCESS" else name,
        "timestamp": when.get("timestamp") if isinstance(when, Mapping) else None,
    }
    extra = record.get("extra") or {}
    if isinstance(extra, Mapping):
        out.update(extra)  # bound context (session_id, user_id, ...) lives here
    attrs = {f"code.{k}": record[k] for k in ("function", "module", "line") if record.get(k) is not None}
    if record.get("name"):
        attrs["logger"] = record["name"]
    if record.get("exception"):
        attrs["exception"] = record["exception"]
    out["attributes"] = {**attrs, **(out.get("attributes") or {})}
    return out


_ECS_FIELDS = (
    ("log.level", "level"), ("service.name", "service"), ("trace.id", "trace_id"), ("span.id", "span_id"),
    ("transaction.id", "transaction_id"), ("user.id", "user_id"), ("url.path", "endpoint"),
    ("http.response.status_code", "status_code"), ("event.duration", "_duration_ns"),
)  # fmt: skip


def _ecs(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    for path, target in _ECS_FIELDS:
        value = lookup(obj, path)
        if value is not None and target not in out:
            out[target] = value
        out.pop(path, None)
    for nested in ("log", "service", "trace", "span", "transaction", "user", "url", "http", "event", "ecs"):
        if isinstance(out.get(nested), Mapping):
            out.pop(nested)
    out.pop("ecs.version", None)
    duration = out.pop("_duration_ns", None)
    if isinstance(duration, int | float) and "latency_ms" not in out:
        out["latency_ms"] = duration / 1e6  # ECS event.duration is in nanoseconds
    return out


def _structlog(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["message"] = out.pop("event")
    return out


def _pino(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["level"] = PINO_LEVELS.get(out["level"], out["level"])
    if "name" in out and "service" not in out:
        out["service"] = out.pop("name")
    return out


def _python_json_logger(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    if "name" in out:
        out.setdefault("attributes", {})
        out["attributes"] = {**out["attributes"], "logger": out.pop("name")}
    asctime = out.pop("asctime", None)
    if asctime is not None and "timestamp" not in out and "created" in out:
        out["timestamp"] = out.pop("created")  # epoch seconds: asctime carries no zone
    elif asctime is not None:
        out.setdefault("attributes", {})["asctime"] = asctime
    return out


def _is_ecs(o: dict[str, Any]) -> bool:
    log = o.get("log")
    return (
        "log.level" in o
        or "ecs.version" in o
        or isinstance(o.get("ecs"), Mapping)
        or (isinstance(log, Mapping) and "level" in log)
    )


Detector = Callable[[dict[str, Any]], bool]
# (name, detector, adapter), checked in this order: the first whose keys match adapts the object
PRESETS: tuple[tuple[str, Detector, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("loguru", lambda o: isinstance(o.get("record"), Mapping) and "text" in o, _loguru),
    ("fluent_bit", lambda o: isinstance(o.get("log"), str) and "message" not in o, _fluent_bit),
    ("vector_kubernetes", lambda o: isinstance(o.get("kubernetes"), Mapping) and "message" in o,
     _vector_kubernetes),
    ("ecs", _is_ecs, _ecs),
    ("structlog", lambda o: "event" in o and "message" not in o and "msg" not in o, _structlog),
    ("pino", lambda o: type(o.get("level")) is int and ("msg" in o or "time" in o), _pino),
    ("python_json_logger", lambda o: "levelname" in o and ("name" in o or "asctime" in o),
     _python_json_logger),
)  # fmt: skip


def adapt_shape(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The shape's name and the object in (nearly) canonical form; `canonical` when none matched."""
    for name, detect, adapt in PRESETS:
        if detect(obj):
            return name, adapt(obj)
    return "canonical", obj


def apply_field_map(
    obj: dict[str, Any], fmap: FieldMap, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The deployment's renames and defaults on an adapted object; rename paths are looked up in the
    object as published (`source`, before a preset reshaped it), then in the adapted one."""
    if not fmap.renames and not fmap.defaults:
        return obj
    out = dict(obj)
    for path, target in fmap.renames.items():
        if out.get(target) is None:
            value = lookup(source, path) if source is not None else None
            if value is None:
                value = lookup(obj, path)
            if value is not None:
                out[target] = value
    for name, value in fmap.defaults.items():
        if out.get(name) is None:
            out[name] = value
    return out
