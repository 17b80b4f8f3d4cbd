"""The one exception type for bad user input: the CLI prints it as one line and exits non-zero."""


class UserError(Exception):
    """A problem with what the user gave us (config, path, file), not a bug in the package."""
