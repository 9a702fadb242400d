"""What produced a study's runs: the commits they were trained with and the one reporting, each run's
overrides, a hash of each run's resolved config without its machine-specific paths, and the distinct
training environments."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cxrsyn.core.config import code_version
from cxrsyn.core.fileio import read_yaml
from cxrsyn.reporting.runs import Study


def provenance(study: Study) -> dict[str, Any]:
    """What produced these runs: the commits they were trained with (``run.code`` of their metrics.json) and
    the one reporting, each run's command-line overrides, and a hash of each run's resolved config without its
    machine-specific paths, so two folders can be checked for the same settings."""
    runs = []
    for run in study.runs:
        runs.append(
            {
                "folder": str(run.folder),
                "arm": run.arm,
                "seed": run.seed,
                "overrides": run.info.get("overrides", []),
                "config_sha256": config_hash(run.folder / "config.yaml"),
                "numerics": (run.info.get("environment") or {}).get("numerics"),
            }
        )
    commits = sorted({str((run.info.get("code") or {}).get("commit")) for run in study.runs})
    return {
        "reported_with": code_version(),
        "trained_with_commits": commits,
        "environments": environments(study),
        "runs": runs,
    }


def environments(study: Study) -> list[dict[str, Any]]:
    """The distinct environments the runs were trained in (``run.environment``: versions, CPU, GPU), each
    with its run count; runs from before environments were recorded count under ``numerics`` null."""
    found: dict[str | None, dict[str, Any]] = {}
    for run in study.runs:
        info = run.info.get("environment") or {}
        entry = found.setdefault(info.get("numerics"), {**info, "numerics": info.get("numerics"), "runs": 0})
        entry["runs"] += 1
    return list(found.values())


def config_hash(path: Path) -> str | None:
    """sha256 of a run's resolved config with ``paths`` (where this machine keeps data and outputs) written as
    placeholders wherever they appear."""

    if not path.is_file():
        return None
    config = read_yaml(path) or {}
    paths = config.pop("paths", None) or {}
    text = json.dumps(config, sort_keys=True, default=str)
    for key, value in sorted(paths.items(), key=lambda item: -len(str(item[1]))):
        if value:  # the resolved config repeats the paths inside other values (data roots, checkpoint dirs)
            text = text.replace(str(value), f"<paths.{key}>")
    return hashlib.sha256(text.encode()).hexdigest()
