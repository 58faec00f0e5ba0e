"""The one exception type users see: a clear, one-line message about their input or settings."""


class FlareError(ValueError):
    """Raised for bad input or settings. The message names the problem in one line; the CLI prints
    it without a traceback and exits non-zero."""


def first_line(error: BaseException) -> str:
    """An exception's first non-empty message line, or its type name when it has no message: the
    part of a library's (often multi-line) error that fits in a FlareError."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
