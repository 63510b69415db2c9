"""The one atomic file writer of the Python package (the Rust side has ``fsutil``): a reader sees the
old file or the new one, never a part, and after a crash the new one survives a power loss."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, content: bytes | str | Callable[[Path], None]) -> None:
    """Replace ``path`` with ``content`` (bytes, text, or a function that writes a given path):
    a temp file in the same directory, fsync, rename, fsync of the directory. An existing file's
    mode is kept, a new file gets the umask's default. On any failure the temp file is removed and
    ``path`` is as it was."""
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    temp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            content(temp)
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode() if isinstance(content, str) else content)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_dir(directory)
