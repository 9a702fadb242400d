"""Keeping API keys out of every file, log, config dump and W&B run.

Keys are read only from the environment. Before a config is saved or sent anywhere it passes through
``redact``: values under secret-looking keys, and any string holding a secret, are replaced. The secrets are
the values of ``SECRET_ENV_VARS`` and any value typed on the command line under a secret-looking key
(``+api_key=...``), once ``register_typed_secrets`` has seen the overrides.

Hydra writes ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` (and a multirun's
``multirun.yaml``) with the command line verbatim before any of our code runs, and W&B records
``sys.argv``. ``RedactSecretsCallback``, registered under ``hydra.callbacks`` in every primary config that
writes a run folder (train, evaluate, generate), registers the typed secrets, redacts ``sys.argv`` at the
start of the run (W&B reads it later), redacts every log record from then on (Hydra's launcher logs each
job's overrides) and rewrites Hydra's files as soon as Hydra has written them.

Secrets are also found by their form, whatever name they were typed under and inside any other value: Google
API keys (``AIza`` + 35 URL-safe characters), W&B keys (``wandb_v1_...``, ``local-`` + 40 hex digits, and
the key ``wandb login`` saved in ``~/.netrc``), Hugging Face tokens (``hf_...``) and Google OAuth access
tokens (``ya29.``..., Vertex AI's bearer tokens). A bare 40-hex-digit
legacy W&B key cannot be told from a git commit id: it is found only as the value of ``WANDB_API_KEY``, of the
netrc login or of a secret-looking key. Command lines print through ``redact_streams``: what cxrsyn, Hydra or a
library writes to stdout and stderr has its secrets replaced too.
"""

from __future__ import annotations

import functools
import logging
import netrc
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SECRET_ENV_VARS = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "WANDB_API_KEY",
    "HF_TOKEN",
    "KAGGLE_KEY",
    "KAGGLE_API_TOKEN",
)
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|credential)", re.IGNORECASE)
REDACTED = "<redacted>"
# A typed value shorter than this is redacted where it was typed (by its key) but not searched for in
# every other string: replacing "1" everywhere would destroy the config. Real keys are far longer.
MIN_TYPED_SECRET_LENGTH = 8
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
MULTIRUN_FILE = "multirun.yaml"

# Keys recognised by their form (see the module doc), wherever they appear.
KEY_PATTERNS = (
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),  # Google API keys: Gemini, GOOGLE_API_KEY
    re.compile(r"wandb_v1_[0-9A-Za-z_\-]{20,}"),  # W&B keys issued since 2025 (about 86 characters)
    re.compile(r"(?<![0-9A-Za-z])local-[0-9a-f]{40}(?![0-9a-f])"),  # W&B server keys
    re.compile(r"(?<![0-9A-Za-z_])hf_[0-9A-Za-z]{30,}"),  # Hugging Face tokens
    re.compile(r"ya29\.[0-9A-Za-z_\-]{20,}"),  # Google OAuth access tokens (Vertex AI's bearer tokens)
)
WANDB_HOST = "api.wandb.ai"

_typed_secrets: set[str] = set()


@functools.lru_cache(maxsize=4)
def _netrc_secrets(path: str | None) -> frozenset[str]:
    """The W&B key ``wandb login`` saved in the netrc file (``NETRC``, default ``~/.netrc``)."""
    try:
        entry = netrc.netrc(path).authenticators(WANDB_HOST)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return frozenset()
    return frozenset({entry[2]}) if entry and entry[2] else frozenset()


def secret_values() -> list[str]:
    """Every known secret, longest first (so that a secret containing another is replaced whole)."""
    values = {value for name in SECRET_ENV_VARS if (value := os.environ.get(name))} | _typed_secrets
    values |= _netrc_secrets(os.environ.get("NETRC"))
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every known secret and every string of a key's form replaced by ``<redacted>``."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    for pattern in KEY_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def _is_secret_key(key: object) -> bool:
    return bool(_SECRET_KEY.search(str(key)))


def register_typed_secrets(overrides: Iterable[str]) -> None:
    """Remember the values of ``key=value`` overrides whose key looks secret, so that ``redact`` also
    removes them wherever else they turn up (an interpolation, a directory name, a log line)."""
    for item in overrides:
        key, sep, value = str(item).partition("=")
        value = value.strip().strip("'\"")
        if sep and _is_secret_key(key) and len(value) >= MIN_TYPED_SECRET_LENGTH:
            _typed_secrets.add(value)


def redact(value: Any, _secrets: list[str] | None = None, by_name: bool = True) -> Any:
    """A copy of ``value`` (nested dicts, lists, strings) with secrets replaced by ``<redacted>``: by value
    always, and (``by_name``, for configs) every value under a secret-looking key."""
    secrets = secret_values() if _secrets is None else _secrets
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if by_name and _is_secret_key(key) and item not in (None, "")
            else redact(item, secrets, by_name)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item, secrets, by_name) for item in value)
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_table(table: Any, keep: tuple[str, ...] = ("path", "file")) -> Any:
    """A copy of a pandas table whose text cells have their secrets replaced, except the columns in ``keep``
    (file paths: a path names a file on disk and is written as it is)."""
    secrets = secret_values()
    columns = [c for c in table.columns if c not in keep and table[c].dtype == object]
    if not columns:
        return table
    cleaned = table.copy()
    for column in columns:
        cleaned[column] = [redact_text(v, secrets) if isinstance(v, str) else v for v in cleaned[column]]
    return cleaned


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """Command-line overrides (``key=value``) with secret values replaced, by key name or by value."""
    redacted = []
    for item in redact([str(item) for item in overrides]):
        key, sep, value = item.partition("=")
        redacted.append(f"{key}={REDACTED}" if sep and _is_secret_key(key) and value else item)
    return redacted


def redact_argv() -> None:
    """Replace secrets in ``sys.argv`` in place (W&B records it as the run's command line). Lightning's
    DDP launcher re-runs ``sys.argv`` for the other ranks: they see ``<redacted>`` where a key was typed,
    which no training setting reads (keys come from the environment)."""
    sys.argv[1:] = redact_overrides(sys.argv[1:])


def redact_logging() -> None:
    """From now on, every log record of the process has its secrets replaced (a record factory survives the
    handlers Hydra installs per job)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: logging reports it when the record is emitted
            return record
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:  # the traceback's last line quotes the error
            error = record.exc_info[1]
            if redact_text(str(error)) != str(error):
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} ({type(error).__name__}: {redact_text(str(error))})"
        return record

    factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class _RedactingStream:
    """stdout or stderr with secrets replaced in every write. A console capture that patches ``write``
    (W&B's) is handed the redacted text."""

    def __init__(self, stream: Any):
        object.__setattr__(self, "_stream", stream)
        object.__setattr__(self, "_outer", None)
        object.__setattr__(self, "_local", threading.local())

    def write(self, data: Any) -> int:
        cleaned = redact_text(data) if isinstance(data, str) else data
        local = self._local
        if self._outer is not None and not getattr(local, "inside", False):
            local.inside = True
            try:
                self._outer(cleaned)
            finally:
                local.inside = False
            return len(data)
        self._stream.write(cleaned)
        return len(data)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "write":  # a capture patching write: it runs around ours, on redacted text
            object.__setattr__(self, "_outer", value)
        else:
            setattr(self._stream, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def redact_streams() -> None:
    """From now on, secrets written to ``sys.stdout`` or ``sys.stderr`` are replaced (idempotent)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))


def redact_yaml_file(path: Path) -> bool:
    """Rewrite a YAML file Hydra wrote with its secrets redacted (interpolations stay as written); returns
    whether anything changed."""
    if not path.is_file():
        return False
    original = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if isinstance(original, list):  # overrides.yaml
        cleaned: Any = redact_overrides(original)
    else:
        cleaned = redact(original)
        hydra_node = cleaned.get("hydra") if isinstance(cleaned, dict) else None
        if isinstance(hydra_node, dict):
            _redact_hydra_node(hydra_node)
    if cleaned == original:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    OmegaConf.save(OmegaConf.create(cleaned), tmp)
    os.replace(tmp, path)
    return True


def _redact_hydra_node(hydra_node: dict[str, Any]) -> None:
    """Hydra's own record of the command line: the override lists and the directory name built from them."""
    overrides = hydra_node.get("overrides")
    if isinstance(overrides, dict):
        for name, items in overrides.items():
            if isinstance(items, list):
                overrides[name] = redact_overrides(items)
    job = hydra_node.get("job")
    if isinstance(job, dict) and isinstance(job.get("override_dirname"), str):
        separator = ((job.get("config") or {}).get("override_dirname") or {}).get("item_sep") or ","
        job["override_dirname"] = separator.join(redact_overrides(job["override_dirname"].split(separator)))


class RedactSecretsCallback(Callback):
    """Hydra callback: no typed key reaches Hydra's files, ``sys.argv`` or anything written after them."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)
        hydra_cfg = config.hydra
        if hydra_cfg.output_subdir is not None:
            folder = Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir)
            for name in HYDRA_FILES:
                redact_yaml_file(folder / name)
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        mode = OmegaConf.select(config, "hydra.mode")
        if getattr(mode, "name", str(mode)) == "MULTIRUN" and sweep_dir:
            redact_yaml_file(Path(str(sweep_dir)) / MULTIRUN_FILE)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if sweep_dir:
            redact_yaml_file(Path(str(sweep_dir)) / MULTIRUN_FILE)

    @staticmethod
    def _start(config: DictConfig) -> None:
        register_typed_secrets(OmegaConf.select(config, "hydra.overrides.task") or [])
        register_typed_secrets(sys.argv[1:])
        redact_argv()
        redact_logging()
        redact_streams()
