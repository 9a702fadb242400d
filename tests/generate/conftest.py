"""Deprecated calls of ours fail the generation tests.

pyproject.toml ignores DeprecationWarning suite-wide (third-party libraries warn about their own internals).
Here every FutureWarning or DeprecationWarning raised while cxrsyn code is on the call stack is an error:
a call of ours (``from_pretrained(torch_dtype=...)``, say) that a library is about to remove. Warnings a
library raises about itself, with no cxrsyn frame beneath them (imports, its own internals), pass as before.
This is the in-process equivalent of ``-W error::FutureWarning -W error::DeprecationWarning`` scoped to our
calls; a command run in a subprocess is checked by running it with ``python -W error::FutureWarning`` where
the test chooses to.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

import cxrsyn

PRODUCT_ROOT = Path(cxrsyn.__file__).resolve().parent
TEST_HELPERS = PRODUCT_ROOT / "testing"
DEPRECATIONS = (FutureWarning, DeprecationWarning)
KEY = "AIza-test-key-0123456789-do-not-leak"  # a made-up Gemini API key the tests look for in every file


@pytest.fixture
def key(monkeypatch):
    """A Gemini API key in the environment, and no switch to Vertex AI."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    for name in ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE"):
        monkeypatch.delenv(name, raising=False)
    return KEY


def called_from_cxrsyn(frame) -> str | None:  # noqa: ANN001 - a frame object
    """``file:line`` of the innermost cxrsyn product frame on the stack (test helpers excluded), or None."""
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PRODUCT_ROOT) and not path.is_relative_to(TEST_HELPERS):
            return f"{path.relative_to(PRODUCT_ROOT.parent)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


@pytest.fixture(autouse=True)
def our_deprecated_calls_are_errors():
    offences: list[str] = []
    with warnings.catch_warnings():
        for category in DEPRECATIONS:
            warnings.simplefilter("always", category)

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, PLR0913
            where = called_from_cxrsyn(sys._getframe(1)) if issubclass(category, DEPRECATIONS) else None
            if where is not None:
                offences.append(f"{category.__name__} under {where}: {message}")
            elif category is not DeprecationWarning:  # pyproject.toml ignores those; pytest records the rest
                warnings._showwarnmsg_impl(
                    warnings.WarningMessage(message, category, filename, lineno, file, line)
                )

        warnings.showwarning = show
        yield offences
    if offences:
        pytest.fail("deprecated calls from cxrsyn:\n" + "\n".join(dict.fromkeys(offences)), pytrace=False)
