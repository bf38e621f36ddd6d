"""Archive sink: logs.raw into hourly Avro container files, for replays after Kafka's retention."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import RetryableSinkError
from pipeline.replay.archive import group_by_hour, write_hour
from pipeline.settings import Settings
from pipeline.types import RawLine

log = logging.getLogger(__name__)


class ArchiveSink:
    """Rows are RawLines (the archive runner decodes raw messages with their positions)."""

    name = "archive"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pending: list[RawLine] = []
        self.files = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveSink:
        return cls(settings.archive_path)

    def write_batch(self, rows: Sequence[RawLine]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        lines, self._pending = self._pending, []  # the runner hands the batch again after a failure
        try:
            for (folder, partition), group in group_by_hour(lines, self.root).items():
                write_hour(folder, partition, group)
                self.files += 1
        except OSError as exc:
            raise RetryableSinkError(f"archive cannot write under {self.root}: {exc}") from exc

    def close(self) -> None:
        pass
