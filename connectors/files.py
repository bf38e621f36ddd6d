"""File sink: curated lines as gzip JSONL, rotated by size and age (for archives and bulk loaders)."""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson

from pipeline.errors import BadDataError, RetryableSinkError
from pipeline.private import open_private, private_dir, write_private
from pipeline.settings import Settings
from pipeline.types import CuratedRecord

log = logging.getLogger(__name__)


class FileSink:
    """Appends to `<dir>/curated-<start>-<seq>.jsonl.gz.part`; a finished file loses the `.part`.

    flush() syncs the gzip stream and the file to disk before the runner commits offsets, so a
    crash loses no committed line; a `.part` left by a crash is still a readable gzip up to its
    last flush, and is finished (its synced lines rewritten as a complete gzip) when the sink starts again.
    """

    name = "file"

    def __init__(self, directory: Path, max_bytes: int, rotate_s: float) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.rotate_s = rotate_s
        private_dir(self.dir)
        for leftover in self.dir.glob("*.part"):
            self._repair(leftover)
        self._pending: list[bytes] = []
        self._out: gzip.GzipFile | None = None
        self._raw: IO[bytes] | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._seq = 0
        self.finished: list[Path] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> FileSink:
        directory = settings.file_sink_dir or settings.home / "files"
        return cls(directory, settings.file_sink_max_bytes, settings.file_sink_rotate_s)

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        try:
            self._pending.extend(orjson.dumps(row) + b"\n" for row in rows)
        except TypeError as exc:
            self._pending.clear()
            raise BadDataError(f"not serialisable as JSON: {exc}") from exc

    def flush(self) -> None:
        # the runner hands the whole batch again after a failure, so nothing stays pending here
        lines, self._pending = self._pending, []
        if not lines:
            return
        try:
            if self._out is None or self._due():
                self._rotate()
            assert self._out is not None and self._raw is not None
            self._out.write(b"".join(lines))
            self._out.flush()  # a gzip sync flush: everything so far is decodable
            self._raw.flush()
            os.fsync(self._raw.fileno())
        except OSError as exc:
            raise RetryableSinkError(f"file sink cannot write {self._path}: {exc}") from exc

    def _due(self) -> bool:
        assert self._raw is not None
        return self._raw.tell() >= self.max_bytes or time.monotonic() - self._opened >= self.rotate_s

    def _rotate(self) -> None:
        self._finish()
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self._path = self.dir / f"curated-{stamp}-{os.getpid()}-{self._seq:04d}.jsonl.gz.part"
        self._raw = open_private(self._path, "ab")  # lives until the next rotation
        self._out = gzip.GzipFile(fileobj=self._raw, mode="ab")
        self._opened = time.monotonic()

    def _finish(self) -> None:
        if self._out is None or self._raw is None or self._path is None:
            return
        self._out.close()
        self._raw.close()
        done = self._path.with_suffix("")
        self._path.rename(done)
        self.finished.append(done)
        log.info("file finished path=%s", done)
        self._out = self._raw = None

    @staticmethod
    def _repair(part: Path) -> None:
        """A crash's `.part`: its synced prefix, rewritten as a complete gzip file."""
        data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(part.read_bytes())
        data = data[: data.rfind(b"\n") + 1]  # whole lines only
        done = part.with_suffix("")
        write_private(done, gzip.compress(data))
        part.unlink()
        log.info("file recovered after a crash path=%s bytes=%s", done, len(data))

    def close(self) -> None:
        self.flush()
        self._finish()
