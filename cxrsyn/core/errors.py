"""Known, user-fixable failures and how entry points report them.

A ``CxrsynError`` carries one line that names the file or field and the fix. Entry points print that line
and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2


class CxrsynError(Exception):
    """A failure the user can fix; its message is one line naming the problem and the fix."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error.

    DataLoader workers re-raise a worker's exception in the main process with the worker's traceback folded
    into the message; the line we raised is the last one, after the exception's class name.
    """
    text = str(error).strip()
    if "Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    marker = f"{CxrsynError.__name__}: "
    return last.split(marker, 1)[1] if marker in last else last


def report_known_errors(fn: F) -> F:
    """Run ``fn``; on a ``CxrsynError`` print ``error: <line>`` (secrets redacted) to stderr and exit with
    status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CxrsynError as error:
            from cxrsyn.core.secrets import redact_text

            # a key can reach a message through a value the user typed or a server echoed: never printed
            print(f"error: {redact_text(one_line(error))}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
