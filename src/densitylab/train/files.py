"""Crash-safe file writes: a temporary file in the same directory, fsync, then rename.

A write that fails for want of space (a full disk, a quota, a file-size limit) raises
:class:`NoSpaceError`, a one-line :class:`~densitylab.errors.DensitylabError`; the file it was
replacing is left as it was, and the temporary file is removed.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from densitylab.errors import DensitylabError

CHUNK = 1 << 20
_NO_SPACE = {  # errno: (what ran out, what to do)
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.EFBIG: ("the file-size limit (ulimit -f) is reached", "raise the limit"),
}


class NoSpaceError(DensitylabError):
    """A write failed for want of space; ``path`` is the file that could not be written."""

    def __init__(self, path: Path, reason: str, advice: str) -> None:
        super().__init__(f"{reason} writing {path}; {advice} and try again")
        self.path, self.reason, self.advice = path, reason, advice


def no_space(exc: BaseException) -> tuple[str, str] | None:
    """``(what ran out, what to do)`` when ``exc`` is a write failing for want of space."""
    return _NO_SPACE.get(exc.errno) if isinstance(exc, OSError) else None  # type: ignore[arg-type]


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        if not isinstance(exc, OSError) or exc.errno not in _NO_SPACE:
            raise
        raise NoSpaceError(path, *_NO_SPACE[exc.errno]) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_chunks(handle: BinaryIO, data: bytes | memoryview) -> None:
    """Write ``data`` in 1 MiB pieces (the one place file bytes are written, for checkpoints)."""
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        handle.write(view[start : start + CHUNK])


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            write_chunks(handle, data)

    atomic_write(path, write)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")
