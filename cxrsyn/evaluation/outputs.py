"""The files a run writes about its results: ``predictions/<test set>.csv`` and ``metrics.json``.

They are published together (``cxrsyn.core.fileio.publishing``): written into a staging folder inside the
run folder, then moved into place with ``metrics.json`` last, which lists them under ``outputs``. A reader
that finds ``metrics.json`` finds the predictions it was computed from; a kill before that leaves the
previous results (or none) untouched."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from cxrsyn.core.compose import bootstrap_settings, settings_at
from cxrsyn.core.fileio import publishing, write_csv
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.core.paths import check_name, inside
from cxrsyn.core.runfolder import FINISHED_NAME
from cxrsyn.evaluation.metrics import (
    binary_metrics,
    calibration,
    sensitivity_at_specificity,
    threshold_metrics,
    youden_threshold,
)
from cxrsyn.evaluation.statistics import bootstrap_ci

PREDICTIONS_DIRNAME = "predictions"
METRICS_NAME = FINISHED_NAME
EXCLUDED_NAME = "excluded.json"  # a study job whose grid cell experiment.exclude names: not run
PROB_COLUMN = "prob"
# where a sample was read from on this machine: not an attribute of the sample
INTERNAL_COLUMNS = ("file", "cache_file", "cache_row", "source", "source_height", "source_width")
# sensitivity is reported at these specificities, the threshold chosen on the test set itself
FIXED_SPECIFICITIES = (0.90, 0.95)


def predictions_table(samples: pd.DataFrame, indices: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """``path,label,prob,patient`` for the given rows of ``samples``, followed by the samples' attributes.
    ``patient`` is the source's patient column, or the path where a source has none."""
    if len(np.unique(indices)) != len(samples) or len(indices) != len(samples):
        raise RuntimeError(f"predictions cover {len(np.unique(indices))} of {len(samples)} samples")
    order = np.argsort(indices)
    rows = samples.iloc[indices[order]].reset_index(drop=True)
    table = rows[[PATH_COLUMN, LABEL_COLUMN]].copy()
    table[PROB_COLUMN] = np.asarray(probs, dtype=np.float64)[order]
    table[PATIENT_COLUMN] = patients_of(rows)
    leading = (PATH_COLUMN, LABEL_COLUMN, PATIENT_COLUMN, *INTERNAL_COLUMNS)
    attributes = [c for c in rows.columns if c not in leading]
    return pd.concat([table, rows[attributes]], axis=1)


def patients_of(table: pd.DataFrame) -> np.ndarray:
    """The patient of every row: the ``patient`` column where present and filled, else the image path (each
    image its own patient; predictions files written before the column existed read this way too)."""
    paths = table[PATH_COLUMN].astype(str)
    if PATIENT_COLUMN not in table.columns:
        return paths.to_numpy()
    return table[PATIENT_COLUMN].astype("string").fillna(paths).astype(str).to_numpy()


def write_predictions(folder: str | os.PathLike, name: str, table: pd.DataFrame) -> Path:
    """``folder/predictions/<name>.csv``, spreadsheet-safe; ``name`` must be a safe file name."""
    check_name(name, "test set name ")
    path = inside(folder, Path(PREDICTIONS_DIRNAME) / f"{name}.csv")
    # probabilities as shortest round-trip text: metrics recomputed from this file reproduce metrics.json
    exact = table.assign(**{PROB_COLUMN: [repr(float(p)) for p in table[PROB_COLUMN]]})
    write_csv(path, exact)  # attributes carried from manifests: no key in the file (write_csv redacts)
    return path


def test_set_metrics(
    table: pd.DataFrame,
    bootstrap: Mapping[str, Any] | None = None,
    validation_threshold: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """n, n_pos, n_neg, n_patients, AUROC, AUPR and, with ``bootstrap`` (``n_resamples``, ``seed``,
    ``alpha``), their patient-clustered bootstrap CIs ``auroc_ci`` and ``aupr_ci`` with ``ci_method`` (see
    ``cxrsyn.evaluation.statistics``); calibration (Brier, ECE); sensitivity, specificity, PPV, NPV, F1 at the
    threshold fixed on the validation split (``at_validation_threshold``), at Youden's J on this test set
    (``at_test_youden``) and the sensitivity at specificity 0.90 and 0.95 (``at_specificity_0.90``, ...): the
    last two chosen on the test set itself, so optimistic."""
    labels, probs = table[LABEL_COLUMN].to_numpy(), table[PROB_COLUMN].to_numpy()
    patients = patients_of(table)
    result = binary_metrics(labels, probs)
    result["n_patients"] = int(len(np.unique(patients)))
    if bootstrap and result["auroc"] is not None:
        result.update(bootstrap_ci(labels, probs, patients=patients, **_bootstrap_kwargs(bootstrap)))
    if result["auroc"] is not None:
        result["calibration"] = calibration(labels, probs)
        thresholds: dict[str, Any] = {}
        if validation_threshold and validation_threshold.get("value") is not None:
            thresholds["at_validation_threshold"] = threshold_metrics(
                labels, probs, validation_threshold["value"]
            )
        thresholds["at_test_youden"] = {
            **threshold_metrics(labels, probs, youden_threshold(labels, probs)),
            "chosen_on": "this test set (optimistic)",
        }
        for specificity in FIXED_SPECIFICITIES:
            thresholds[f"at_specificity_{specificity:.2f}"] = {
                **sensitivity_at_specificity(labels, probs, specificity),
                "chosen_on": "this test set (optimistic)",
            }
        result["thresholds"] = thresholds
    return result


def subgroup_metrics(
    table: pd.DataFrame,
    columns: Sequence[str],
    bootstrap: Mapping[str, Any] | None = None,
    min_per_class: int = 10,
) -> dict[str, dict[str, Any]]:
    """AUROC and AUPR (with CIs when ``bootstrap``) per value of each attribute column present in ``table``.

    A value found only among positives (Kermany's bacteria and virus subtypes) is scored as those positives
    against every negative (``"vs": "all negatives"``). Subgroups with fewer than ``min_per_class``
    positives or negatives (a value found only among negatives, like the normal subtype, has none) get their
    counts and null metrics (``"too_small": true``)."""
    result: dict[str, dict[str, Any]] = {}
    labels = table[LABEL_COLUMN].to_numpy()
    for column in columns:
        if column not in table.columns:
            continue
        groups: dict[str, Any] = {}
        values = table[column].astype("string").fillna("missing")
        for value in sorted(values.unique()):
            member = (values == value).to_numpy()
            entry: dict[str, Any] = {}
            if labels[member].all():
                member = member | (labels == 0)
                entry["vs"] = "all negatives"
            rows = table[member]
            counts = {"n": int(member.sum()), "n_pos": int(labels[member].sum())}
            counts["n_neg"] = counts["n"] - counts["n_pos"]
            entry.update(counts)
            if min(counts["n_pos"], counts["n_neg"]) < min_per_class:
                groups[str(value)] = {**entry, "auroc": None, "aupr": None, "too_small": True}
                continue
            scores = rows[PROB_COLUMN].to_numpy()
            entry.update(binary_metrics(rows[LABEL_COLUMN].to_numpy(), scores))
            if bootstrap:
                entry.update(
                    bootstrap_ci(
                        rows[LABEL_COLUMN].to_numpy(),
                        scores,
                        patients=patients_of(rows),
                        **_bootstrap_kwargs(bootstrap),
                    )
                )
            groups[str(value)] = entry
        if groups:
            result[column] = groups
    return result


def _bootstrap_kwargs(bootstrap: Mapping[str, Any]) -> dict[str, Any]:
    return {key: bootstrap[key] for key in ("n_resamples", "seed", "alpha") if key in bootstrap}


def collect_results(
    folder: Path,
    datamodule: Any,
    model: Any,
    checkpoint: dict[str, Any],
    seconds: float,
    extra: dict[str, Any] | None = None,
    cfg: DictConfig | None = None,
) -> dict[str, Any]:
    """Write ``folder/predictions/<set>.csv`` and return what ``metrics.json`` holds (per test set n, n_pos,
    n_neg, AUROC, AUPR, subgroups, thresholds, calibration, skipped); CIs and subgroups as ``evaluation`` in
    ``cfg`` sets them. ``folder`` is a publication's staging folder (see the module doc)."""
    bootstrap = bootstrap_settings(cfg) if cfg is not None else None
    subgroups = settings_at(cfg, "evaluation.subgroups") if cfg is not None else {}
    test_sets: dict[str, Any] = {}
    for name in datamodule.test_set_names:
        predictions = model.test_predictions[name]
        table = predictions_table(datamodule.tables[name], predictions.indices, predictions.probs)
        path = write_predictions(folder, name, table)
        skipped = datamodule.summary["test_sets"][name]["skipped"]
        test_sets[name] = {
            **test_set_metrics(table, bootstrap, (extra or {}).get("validation_threshold")),
            "subgroups": subgroup_metrics(
                table, subgroups.get("columns", ()), bootstrap, subgroups.get("min_per_class", 10)
            ),
            "predictions": str(path.relative_to(folder)),
            "skipped": skipped,
        }
        note = datamodule.summary["test_sets"][name].get("found", {}).get("note")
        if note:  # e.g. NIH contains RSNA's images: its results are not independent of RSNA's
            test_sets[name]["note"] = note
    return {
        "test_sets": test_sets,
        "checkpoint": checkpoint,
        **(extra or {}),
        "seconds": round(seconds, 1),
        "data": datamodule.summary,
    }


def write_results(output_dir: Path, *results: Any, **options: Any) -> dict[str, Any]:
    """``predictions/<set>.csv`` and ``metrics.json`` (``collect_results``, same arguments after the folder),
    published together."""
    with publishing(output_dir, METRICS_NAME) as publication:
        metrics = collect_results(publication.staging, *results, **options)
        metrics = publication.write_manifest(metrics)
    print_results(output_dir, metrics)
    return metrics


@rank_zero_only
def print_results(output_dir: Path, metrics: dict[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:.3f}"

    def with_ci(result: dict[str, Any], key: str) -> str:
        ci = result.get(f"{key}_ci")
        return fmt(result[key]) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")

    rows = [f"{'test set':<24} {'n':>7} {'n_pos':>7} {'AUROC (95% CI)':>22} {'AUPR (95% CI)':>22}"]
    for name, result in metrics["test_sets"].items():
        rows.append(
            f"{name:<24} {result['n']:>7} {result['n_pos']:>7} {with_ci(result, 'auroc'):>22} "
            f"{with_ci(result, 'aupr'):>22}"
        )
    print("\n".join(["", "results (positive class = pneumonia):", *rows, ""]))
    print(f"run folder:  {output_dir}")
    print(f"metrics:     {output_dir / METRICS_NAME}")
    print(f"predictions: {output_dir / 'predictions'}/<test set>.csv")
    checkpoint = metrics["checkpoint"]
    if checkpoint.get("monitor"):
        print(f"checkpoints: {output_dir / 'checkpoints'} (best by {checkpoint['monitor']}, and last.ckpt)")
    if checkpoint.get("path"):
        rule = f" ({checkpoint['tested']})" if checkpoint.get("tested") else ""
        print(f"tested:      {checkpoint['path']}{rule}, sha256 {str(checkpoint.get('sha256'))[:12]}")
    for name, result in metrics["test_sets"].items():
        if result.get("note"):
            print(f"note:        {name}: {result['note']}")
        if result["skipped"]:
            print(f"skipped:     {len(result['skipped'])} file(s) of {name}, listed in metrics.json")
