"""Keeping API keys out of every file, log, config dump and W&B run.

Keys are read only from the environment. Before a config is saved or sent anywhere it passes through
``redact``: values under secret-looking keys, and any string holding the value of a secret environment
variable, are replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

SECRET_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "KAGGLE_KEY")
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|credential)", re.IGNORECASE)
REDACTED = "<redacted>"


def secret_values() -> list[str]:
    return [value for name in SECRET_ENV_VARS if (value := os.environ.get(name))]


def redact(value: Any, _secrets: list[str] | None = None) -> Any:
    """A copy of ``value`` (nested dicts, lists, strings) with secrets replaced by ``<redacted>``."""
    secrets = secret_values() if _secrets is None else _secrets
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if _SECRET_KEY.search(str(key)) and item not in (None, "")
            else redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item, secrets) for item in value)
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


def redact_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides (``key=value``) with secret values replaced, by key name or by value."""
    redacted = []
    for item in redact(list(overrides)):
        key, sep, value = item.partition("=")
        redacted.append(f"{key}={REDACTED}" if sep and _SECRET_KEY.search(key) and value else item)
    return redacted
