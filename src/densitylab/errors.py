"""The one exception type a user can cause, and the one-line message of every failure a user can
cause and fix (the CLI prints it and exits 2; ``--debug`` or ``DENSITYLAB_DEBUG=1`` adds the
traceback)."""

from __future__ import annotations

import errno


class DensitylabError(Exception):
    """An error caused by the user's input, with a message saying what to do about it."""


_OS_ADVICE = {
    errno.EACCES: "choose a location you may read or write",
    errno.EPERM: "choose a location you may read or write",
    errno.EROFS: "choose a writable location",
    errno.ENOSPC: "free some space and try again",
    errno.EDQUOT: "free some space and try again",
    errno.EFBIG: "raise the file-size limit (ulimit -f) and try again",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "check the path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
}


def user_message(exc: BaseException) -> str | None:
    """One line for a failure the user can fix (a :class:`DensitylabError`, or a file-system error
    such as a denied permission or a full disk); None for anything else, which is a bug."""
    if isinstance(exc, DensitylabError):
        return " ".join(str(exc).split("\n"))
    if isinstance(exc, OSError) and exc.errno in _OS_ADVICE:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; {_OS_ADVICE[exc.errno]}"
    return None
