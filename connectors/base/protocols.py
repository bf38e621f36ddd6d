"""What a sink is and what else a sink may offer, declared as protocols: the runner and the services
ask `isinstance(sink, Capability)`, and a sink that offers one says so by subclassing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pipeline.settings import Settings
from pipeline.store.query import QueryFilters
from pipeline.types import CuratedRecord


@runtime_checkable
class Sink(Protocol):
    """Where curated lines end up. A runner calls write_batch, then flush, then commits offsets."""

    name: str

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        """Buffer or write rows; may raise a classified SinkError."""

    def flush(self) -> None:
        """Make everything written so far durable; offsets are committed only after this returns."""

    def close(self) -> None:
        """Release connections."""


class SinkFactory(Protocol):
    """A registered sink class: built from the settings alone."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        """The sink as configured."""
        ...


@runtime_checkable
class HasStatsSink(Protocol):
    """A sink that also stores the window statistics of logs.stats (beside its lines)."""

    def stats_sink(self) -> Sink:
        """A sink of logs.stats rows sharing this sink's connection."""
        ...


@runtime_checkable
class StoreReader(Protocol):
    """A sink that holds a store others read through it (the embedded chDB store has one owner)."""

    def query(self, filters: QueryFilters) -> list[dict[str, Any]]:
        """Kept lines matching the filters."""
        ...

    def summary(self) -> dict[str, Any]:
        """Lines and bytes kept, incidents."""
        ...

    def stats(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Endpoint window statistics (filters: endpoint, since_us, limit)."""
        ...

    def sql(self, text: str, limit: int) -> list[dict[str, Any]]:
        """A read-only SQL query."""
        ...
