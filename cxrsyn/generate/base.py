"""What every generator shares: the counts a run reports (with what its replies billed), and the errors and
transport failures the Gemini paths stop or retry on. Reading Gemini replies lives in ``gemini_reply``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cxrsyn.core.errors import CxrsynError

# what a reply billed, summed over a run (cxrsyn.generate.cost.spend prices it)
BILLED_COLUMNS = (
    "usage_prompt_token_count",
    "usage_thoughts_token_count",
    "usage_candidates_token_count",
    "usage_image_token_count",
    "thought_images",
)


class FatalRequestError(CxrsynError):
    """A reply that retrying cannot fix (bad key, unknown model, no quota, malformed request)."""


class RunStopped(CxrsynError):
    """A run that stopped before all its requests were made (a refusal, no quota, unmatched batch results),
    carrying what it made and billed until then so the run's summary can still say so."""

    def __init__(self, message: str, counts: Counts):
        super().__init__(message)
        self.counts = counts


@dataclass
class Counts:
    ok: int = 0
    retried: int = 0
    no_image: int = 0
    failed: int = 0
    billed: Counter = field(default_factory=Counter)  # BILLED_COLUMNS summed over the replies of this run
    replies: int = 0  # replies that may have been billed (with or without an image)

    def postfix(self) -> dict[str, int]:
        return {"ok": self.ok, "retried": self.retried, "blocked": self.no_image, "failed": self.failed}

    def bill(self, columns: Mapping[str, Any]) -> None:
        """Add one reply's billed counts (not thread safe: callers hold their lock)."""
        self.replies += 1
        for name in BILLED_COLUMNS:
            value = columns.get(name)
            if isinstance(value, (int, float)):
                self.billed[name] += value


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and connection failures of whichever HTTP library this google-genai uses (httpx or httpx2)."""
    import importlib

    classes: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            classes.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


def is_transport_error(error: BaseException) -> bool:
    return isinstance(error, _transport_errors())


def short_error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
