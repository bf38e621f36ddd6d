"""What sinks, archive and replay write is readable by this account only: files 0600, the folders
they create 0700, whatever the umask; a folder that already existed keeps its mode."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.files import FileSink
from pipeline.engine.curate import curate
from pipeline.private import private_dir
from pipeline.replay.archive import write_hour
from pipeline.types import RawLine
from pipeline.wire.records import normalize


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the common default, which leaves files 0644 and folders 0755
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def line(offset: int) -> RawLine:
    record = normalize({"timestamp": 1_790_000_000_000_000, "service": "s", "level": "INFO", "message": "m"})
    return RawLine(record, "logs.raw", 0, offset)


def test_file_sink_files_and_folders(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "a" / "files", max_bytes=10_000_000, rotate_s=3600)
    sink.write_batch([curate(line(1), ["error"], None, 30)])
    sink.flush()
    sink.close()
    [done] = sink.finished
    assert mode(done) == 0o600
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "files") == 0o700


def test_archive_files_and_folders(tmp_path: Path) -> None:
    path = write_hour(tmp_path / "archive" / "2026" / "12", 0, [line(1), line(2)])
    assert mode(path) == 0o600
    assert mode(tmp_path / "archive") == mode(tmp_path / "archive" / "2026" / "12") == 0o700


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    private_dir(tmp_path / "new")
    assert mode(tmp_path) == 0o755 and mode(tmp_path / "new") == 0o700
