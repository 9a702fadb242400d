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
"""

from __future__ import annotations

import logging
import os
import re
import sys
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

_typed_secrets: set[str] = set()


def secret_values() -> list[str]:
    """Every known secret, longest first (so that a secret containing another is replaced whole)."""
    values = {value for name in SECRET_ENV_VARS if (value := os.environ.get(name))} | _typed_secrets
    return sorted(values, key=len, reverse=True)


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


def redact(value: Any, _secrets: list[str] | None = None) -> Any:
    """A copy of ``value`` (nested dicts, lists, strings) with secrets replaced by ``<redacted>``."""
    secrets = secret_values() if _secrets is None else _secrets
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _is_secret_key(key) and item not in (None, "") else redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item, secrets) for item in value)
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


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
        secrets = secret_values()
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed call: logging reports it when the record is emitted
                return record
            cleaned = redact(message, secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return record

    factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


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
