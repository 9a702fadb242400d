"""The files a run writes about its results: ``predictions/<test set>.csv`` and ``metrics.json``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.data.manifest import LABEL_COLUMN, PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.evaluation.metrics import (
    binary_metrics,
    calibration,
    sensitivity_at_specificity,
    threshold_metrics,
    youden_threshold,
)
from cxrsyn.evaluation.statistics import bootstrap_ci

PREDICTIONS_DIRNAME = "predictions"
METRICS_NAME = "metrics.json"
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
    path = Path(folder) / PREDICTIONS_DIRNAME / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    # probabilities as shortest round-trip text: metrics recomputed from this file reproduce metrics.json
    exact = table.assign(**{PROB_COLUMN: [repr(float(p)) for p in table[PROB_COLUMN]]})
    exact.to_csv(path, index=False)
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


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")
    os.replace(handle.name, path)
    return path
