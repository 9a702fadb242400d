"""API keys read from the environment, checked before any request carries them: a key that is no valid HTTP
header value (a line break, a space, a non-ASCII character) would otherwise reach an HTTP library's error
message, which quotes it."""

from __future__ import annotations

import os

from cxrsyn.core.errors import CxrsynError


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header (an API key), never quoting it; None when it can."""
    if value != value.strip():
        return "it starts or ends with a space or line break"
    for position, char in enumerate(value, start=1):
        if char in "\r\n":
            return f"it holds a line break (character {position})"
        if char.isspace():
            return f"it holds a space (character {position})"
        if not 0x21 <= ord(char) <= 0x7E:
            return f"it holds a non-ASCII or control character (character {position})"
    return None


def checked_key(variable: str) -> str:
    """The key in environment variable ``variable``, or one line saying why it is not a valid key (a line
    break, a space, a non-ASCII character), before any request could carry it into an error message."""
    value = os.environ.get(variable, "")
    problem = header_value_problem(value)
    if problem:
        raise CxrsynError(
            f"{variable} is not a valid API key: {problem}; copy the key again (without quotes, spaces or line "
            f"breaks) and set {variable} to it"
        )
    return value
