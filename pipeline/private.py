"""Files and folders only this account can read (0600 / 0700): what sinks, archive and replay write
are log lines, often with personal data, and the default umask would leave them 0644 in 0755."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """The folder and its missing parents, each created 0700 (whatever the umask). A folder that
    exists is left as it is: it may be the user's own (a replay written to the current folder)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(folder, DIR_MODE)
    return path


def open_private(path: Path, mode: str = "wb") -> IO[bytes]:
    """A binary file opened for writing ("wb" truncates, "ab" appends), created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an existing file keeps no wider mode
    return os.fdopen(fd, mode)


def write_private(path: Path, data: bytes) -> None:
    with open_private(path) as out:
        out.write(data)
