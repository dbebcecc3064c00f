"""The one exception type a user can cause; the CLI prints its message on one line and exits 2."""


class DensitylabError(Exception):
    """An error caused by the user's input, with a message saying what to do about it."""
