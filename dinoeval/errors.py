"""The one error type users see: a one-line message that names the thing and the fix."""


class DinoevalError(ValueError):
    """Bad input or configuration. The CLI prints ``str(err)`` and exits with code 2."""
