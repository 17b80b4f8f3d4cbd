"""The one exception type for bad user input: the CLI prints it as one line and exits non-zero."""


class UserError(Exception):
    """A problem with what the user gave us (config, path, file), not a bug in the package."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
