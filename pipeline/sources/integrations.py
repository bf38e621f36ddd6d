"""structlog and loguru integrations beside the stdlib handler; none imports its library.

    structlog.configure(processors=[..., HindsightProcessor("checkout"), structlog.processors.JSONRenderer()])
    loguru.logger.add(HindsightLoguruSink("checkout"), level="DEBUG")

Both ship through a Shipper (a bounded queue and a thread), so logging never waits on Kafka, and both
merge the bound log context (pipeline.sources.logcontext) under the line's own fields.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any

from pipeline.settings import Settings
from pipeline.sources.logcontext import current
from pipeline.sources.publisher import Publisher, Shipper, build_record
from pipeline.types import Level, LogRecord

# structlog's method names and loguru's level names -> our levels
_NAMES = {
    "trace": "TRACE",
    "debug": "DEBUG",
    "info": "INFO",
    "success": "INFO",
    "msg": "INFO",
    "notice": "INFO",
    "warn": "WARN",
    "warning": "WARN",
    "err": "ERROR",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "FATAL",
    "fatal": "FATAL",
}
_STRUCTLOG_RESERVED = ("event", "level", "timestamp", "exc_info", "exception", "logger", "logger_name")


def _level(name: str) -> str:
    mapped = _NAMES.get(name.lower())
    if mapped is not None:
        return mapped
    try:
        return Level.parse(name).name
    except ValueError:
        return "INFO"


def _timestamp_us(value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1_000_000)
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000)
        except ValueError:
            pass
    return time.time_ns() // 1000


class _Shipping:
    """What both integrations share: the service name and a Shipper (their own unless given one)."""

    def __init__(
        self,
        service: str,
        settings: Settings | None = None,
        publisher: Publisher | None = None,
        shipper: Shipper | None = None,
    ) -> None:
        self.service = service
        self.shipper = shipper or Shipper(settings, publisher)

    def flush(self, timeout: float = 10.0) -> None:
        self.shipper.flush(timeout)

    def close(self) -> None:
        self.shipper.close()


class HindsightProcessor(_Shipping):
    """A structlog processor: ships a copy of each event and passes the event on unchanged, so it
    sits anywhere before the renderer. `event` is the message; context fields are lifted; every other
    key (stringified) is an attribute."""

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        bound = current()
        self.shipper.submit((method_name, {**bound, **event_dict}), self._convert)
        return event_dict

    def _convert(self, item: tuple[str, Mapping[str, Any]]) -> LogRecord:
        method_name, event = item
        level = _level(str(event.get("level") or method_name))
        message = str(event.get("event", ""))
        exc = event.get("exception")
        if isinstance(exc, str) and exc:
            message = f"{message}\n{exc}"
        elif event.get("exc_info"):
            info = event["exc_info"]
            if isinstance(info, BaseException):
                message = f"{message}\n{''.join(traceback.format_exception(info))}"
        logger_name = event.get("logger") or event.get("logger_name")
        fields = {k: v for k, v in event.items() if k not in _STRUCTLOG_RESERVED}
        return build_record(
            self.service,
            level,
            message,
            _timestamp_us(event.get("timestamp")),
            fields,
            {"logger": str(logger_name)} if logger_name else None,
        )


class HindsightLoguruSink(_Shipping):
    """A loguru sink: `logger.add(HindsightLoguruSink("checkout"))`. `extra` (from `logger.bind()` or
    `logger.contextualize()`) fills the context fields; the rest of `extra` becomes attributes."""

    def __call__(self, message: Any) -> None:
        record = message.record
        bound = current()
        self.shipper.submit(
            {
                "level": record["level"].name,
                "message": record["message"],
                "time": record["time"],
                "extra": {**bound, **record["extra"]},
                "name": record["name"],
                "function": record["function"],
                "line": record["line"],
                "exception": record["exception"],
            },
            self._convert,
        )

    def _convert(self, item: dict[str, Any]) -> LogRecord:
        message = item["message"]
        exc = item["exception"]
        if exc is not None and exc.value is not None:
            message = f"{message}\n{''.join(traceback.format_exception(exc.type, exc.value, exc.traceback))}"
        attributes = {"logger": str(item["name"]), "code.function": str(item["function"])}
        attributes["code.lineno"] = str(item["line"])
        return build_record(
            self.service,
            _level(item["level"]),
            message,
            _timestamp_us(item["time"]),
            item["extra"],
            attributes,
        )
