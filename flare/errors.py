"""The one exception type users see: a clear, one-line message about their input or settings."""


class FlareError(ValueError):
    """Raised for bad input or settings. The message names the problem in one line; the CLI prints
    it without a traceback and exits non-zero."""
