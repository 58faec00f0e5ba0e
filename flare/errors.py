"""The one exception type users see: a clear, one-line message about their input or settings, and
the helpers that fit other text into that line."""

import reprlib


class FlareError(ValueError):
    """Raised for bad input or settings. The message names the problem in one line; the CLI prints
    it without a traceback and exits non-zero."""


def first_line(error: BaseException) -> str:
    """An exception's first non-empty message line, or its type name when it has no message: the
    part of a library's (often multi-line) error that fits in a FlareError."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def described(error: BaseException) -> str:
    """`Type: first line` of an error (at most 300 characters of the line), or the type alone: for
    errors raised by a user's own code (a custom metric), where the type is part of the message."""
    return f"{type(error).__name__}: {first_line(error)[:300]}" if str(error).strip() else type(error).__name__


def brief(value: object) -> str:
    """A value for an error message, on one line: never the whole of a long or deeply nested one."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 60
    shortener.maxlist = shortener.maxdict = 4
    shortener.maxlevel = 2
    return shortener.repr(value).replace("\n", " ")
