"""A study's run folders: each run's ``metrics.json``, the arms named by the overrides that differ between
runs, and the results tables (one row per run and test set; mean and sd over seeds per arm)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import read_csv, read_yaml
from cxrsyn.core.paths import check_name, inside
from cxrsyn.evaluation.outputs import EXCLUDED_NAME, METRICS_NAME
from cxrsyn.reporting.replicates import duplicate_line, one_run_per_seed

IGNORED_OVERRIDE_PREFIXES = ("seed=", "hydra.", "hydra/")


@dataclass
class Run:
    """One training run's folder and its ``metrics.json``."""

    folder: Path
    metrics: dict[str, Any]
    arm: str = ""
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def info(self) -> dict[str, Any]:
        return self.metrics.get("run", {})

    @property
    def seed(self) -> int:
        return int(self.info.get("seed", 0))

    def predictions(self, test_set: str) -> pd.DataFrame:
        """The run's predictions file for ``test_set``, read once (comparisons and curves both use it)."""
        if test_set not in self._tables:
            self._tables[test_set] = read_csv(
                inside(self.folder, self.metrics["test_sets"][test_set]["predictions"])
            )
        return self._tables[test_set]


@dataclass
class Study:
    runs: list[Run]
    unfinished: list[str] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)  # job folder -> experiment.exclude cell
    duplicates: dict[str, str] = field(
        default_factory=dict
    )  # run folder left out -> the run of its arm and seed

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(run.arm for run in self.runs))

    @property
    def test_sets(self) -> list[str]:
        return list(dict.fromkeys(name for run in self.runs for name in run.metrics["test_sets"]))

    @property
    def seeds(self) -> list[int]:
        return sorted({run.seed for run in self.runs})

    @property
    def is_phantom(self) -> bool:
        """Whether any run was trained or tested on phantom stand-ins (``source=phantom``)."""
        return "phantom" in {run.info.get("source") for run in self.runs}

    def of_arm(self, arm: str) -> list[Run]:
        return sorted((run for run in self.runs if run.arm == arm), key=lambda run: run.seed)


def find_runs(folder: str | Path) -> Study:
    """Every finished run under ``folder`` (itself, or job folders below it); job folders without
    ``metrics.json`` are listed as unfinished. Arms are named by the overrides that differ between runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CxrsynError(f"report folder {folder} does not exist; give a run or multirun folder")
    paths = sorted(folder.rglob(METRICS_NAME), key=lambda path: _natural_key(path.parent, folder))
    # W&B's files and hidden folders (a staging folder a killed run left) hold no runs
    paths = [
        path
        for path in paths
        if "wandb" not in path.parts
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    loaded = [(path.parent, _checked_names(path, json.loads(path.read_text()))) for path in paths]
    # training runs only: cxrsyn.evaluate writes a metrics.json without "run"
    runs = [Run(run_dir, metrics) for run_dir, metrics in loaded if "run" in metrics]
    if not runs:
        raise CxrsynError(
            f"no training run under {folder} (no metrics.json with a 'run' entry); give the folder that "
            "`python -m cxrsyn.train` (hydra.run.dir) or a multirun (hydra.sweep.dir) wrote"
        )
    finished = {run.folder for run in runs}
    jobs = [job.parent for job in folder.rglob(".hydra")]
    excluded = {
        str(job.relative_to(folder)) or ".": json.loads((job / EXCLUDED_NAME).read_text())["cell"]
        for job in jobs
        if (job / EXCLUDED_NAME).is_file()
    }
    unfinished = [
        str(job.relative_to(folder)) or "."
        for job in jobs
        if job not in finished and not (job / METRICS_NAME).exists() and not (job / EXCLUDED_NAME).exists()
    ]
    name_arms(runs)
    runs, duplicates = one_run_per_seed(runs, lambda r: r.arm, lambda r: r.seed, lambda r: _name(r, folder))
    if duplicates:
        print(duplicate_line(duplicates))
    return Study(runs, sorted(unfinished), dict(sorted(excluded.items())), duplicates)


def _name(run: Run, root: Path) -> str:
    return str(run.folder.relative_to(root)) or "."


def _checked_names(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's metrics, its test-set names checked: they name the report's figures."""
    for name in metrics.get("test_sets", {}):
        check_name(name, f"{path}: test set name ")
    return metrics


def _natural_key(path: Path, root: Path) -> list[Any]:
    parts = path.relative_to(root).parts
    return [(0, int(part)) if part.isdigit() else (1, part) for part in parts]


def name_arms(runs: Sequence[Run]) -> None:
    """Arm = the overrides whose values differ between runs (seed and hydra settings aside), in the order
    they were given; with none differing, the training data's name."""
    per_run = [override_map(run) for run in runs]
    varying = varying_keys(per_run)
    for run, overrides in zip(runs, per_run, strict=True):
        parts = [f"{key}={overrides[key]}" for key in varying if key in overrides]
        run.arm = ",".join(parts) or f"data={run.info.get('train_data') or 'default'}"


def override_map(run: Run) -> dict[str, str]:
    """The run's command-line overrides as key -> value (seed and hydra settings aside; ``+``/``~`` dropped)."""
    overrides = {}
    for item in run.info.get("overrides", []):
        if "=" in item and not item.startswith(IGNORED_OVERRIDE_PREFIXES):
            key, value = item.split("=", 1)
            overrides[key.lstrip("+~")] = value
    return overrides


def varying_keys(per_run: Sequence[dict[str, str]]) -> list[str]:
    """The override keys whose values differ between runs, in the order they were first given."""
    keys = list(dict.fromkeys(key for overrides in per_run for key in overrides))
    return [key for key in keys if len({overrides.get(key) for overrides in per_run}) > 1]


def experiment_settings(study: Study) -> dict[str, Any]:
    """The ``experiment`` block of the first run's resolved config ({} when absent)."""

    config = study.runs[0].folder / "config.yaml"
    if not config.is_file():
        return {}
    return (read_yaml(config) or {}).get("experiment") or {}


def notes_by_test_set(study: Study) -> dict[str, str]:
    """The notes runs carry about a test set (e.g. NIH contains RSNA's images: the two are not independent)."""
    return {
        name: result["note"]
        for run in study.runs
        for name, result in run.metrics["test_sets"].items()
        if result.get("note")
    }


# ------------------------------------------------------------------------------------------------ tables
def results_table(study: Study) -> pd.DataFrame:
    """One row per run and test set: arm, seed, n, AUROC and AUPR with their CIs, CAM bottom-band share, and
    what the run trained for (``training_of``)."""
    rows = []
    for run in study.runs:
        for name, result in run.metrics["test_sets"].items():
            auroc_ci, aupr_ci = result.get("auroc_ci") or [None, None], result.get("aupr_ci") or [None, None]
            cam = (run.metrics.get("gradcam") or {}).get(name, {}).get("bottom_band_share", {})
            training = training_of(run)
            rows.append(
                {
                    "arm": run.arm,
                    "train_data": run.info.get("train_data"),
                    "source": run.info.get("source"),
                    "seed": run.seed,
                    "test_set": name,
                    "n": result["n"],
                    "n_pos": result["n_pos"],
                    "auroc": result["auroc"],
                    "auroc_lo": auroc_ci[0],
                    "auroc_hi": auroc_ci[1],
                    "aupr": result["aupr"],
                    "aupr_lo": aupr_ci[0],
                    "aupr_hi": aupr_ci[1],
                    "cam_bottom_share": cam.get("mean"),
                    **training,
                    "run": str(run.folder),
                }
            )
    table = pd.DataFrame(rows)
    for column in TRAINING_COLUMNS:  # runs written before metrics.json recorded training: empty, not None
        table[column] = pd.to_numeric(table[column])
    return table


TRAINING_COLUMNS = ("steps", "epochs", "images_seen", "pretrain_steps")


def training_of(run: Run) -> dict[str, Any]:
    """What the run trained for (metrics.json ``training``): optimiser steps, passes over its training split,
    images seen, and the steps of a pretraining stage (None where not recorded)."""
    training = run.metrics.get("training") or {}
    pretrain = (((run.info.get("init") or {}).get("pretrain") or {}).get("training")) or {}
    return {
        "steps": training.get("steps"),
        "epochs": training.get("epochs"),
        "images_seen": training.get("images_seen"),
        "pretrain_steps": pretrain.get("steps"),
    }


def summary_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per arm and test set (sd is empty with one seed), and what the arm trained for:
    ``steps`` (fewest over its seeds; ``steps_max`` the most), ``pretrain_steps``, mean ``epochs`` and
    ``images_seen``."""
    grouped = per_run.groupby(["arm", "test_set"], sort=False)
    summary = grouped.agg(
        train_data=("train_data", "first"),
        source=("source", "first"),
        seeds=("seed", "nunique"),
        n=("n", "first"),
        auroc_mean=("auroc", "mean"),
        auroc_sd=("auroc", "std"),
        aupr_mean=("aupr", "mean"),
        aupr_sd=("aupr", "std"),
        cam_bottom_share=("cam_bottom_share", "mean"),
        steps=("steps", "min"),
        steps_max=("steps", "max"),
        pretrain_steps=("pretrain_steps", "max"),
        epochs=("epochs", "mean"),
        images_seen=("images_seen", "mean"),
    )
    return summary.reset_index()
