"""Statistics between and across a study's arms: which arms to pair, the per-seed paired tests on the same
test images (``compare_arms``), the study-level verdicts over seeds and patients (``study_comparisons``), and
the curve of a numeric arm (``arm_curves``). The estimators themselves are ``cxrsyn.evaluation.statistics``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.core.compose import override_set
from cxrsyn.core.errors import CxrsynError
from cxrsyn.evaluation.outputs import patients_of
from cxrsyn.evaluation.statistics import delong, holm, paired_bootstrap, study_difference, study_mean
from cxrsyn.reporting.runs import Run, Study, override_map, varying_keys

# Fewer seeds than this and a study-level comparison is flagged underpowered: its t quantile with seeds - 1
# df (2.78 at 5 seeds, 4.30 at 3, 12.7 at 2) makes the interval wide by construction.
MIN_SEEDS = 5


@dataclass(frozen=True)
class Resampling:
    """How every bootstrap of a report resamples: ``n_resamples`` draws from ``seed``; CIs at 1 - ``alpha``."""

    n_resamples: int = 2000
    seed: int = 0
    alpha: float = 0.05


def pairs_to_compare(study: Study, requested: Sequence[Sequence[str]] | None) -> list[tuple[str, str]]:
    """The arm pairs of ``experiment.compare``, or every pair of arms when the experiment names none. A side
    is one or more overrides (``data=a`` or ``data=a,mixing.k=25``); when a side matches several arms (a
    study crossing two keys), each arm of side a is paired with the arm of side b that has the same other
    overrides: ``[data=a, data=b]`` compares a with b at every k."""
    arms = study.arms
    if not requested:
        return list(itertools.combinations(arms, 2))
    pairs = []
    for a, b in requested:
        found = _matched_pairs(arms, str(a), str(b))
        if found:
            pairs.extend(pair for pair in found if pair not in pairs)
        else:
            print(f"report: experiment.compare [{a}, {b}] matches no two arms of {arms}; not compared")
    if not pairs:
        print("report: comparing every pair of arms instead")
    return pairs or list(itertools.combinations(arms, 2))


def _matched_pairs(arms: Sequence[str], a: str, b: str) -> list[tuple[str, str]]:
    wanted_a, wanted_b = override_set(a), override_set(b)
    side_a = [arm for arm in arms if wanted_a <= override_set(arm)]
    side_b = [arm for arm in arms if wanted_b <= override_set(arm)]
    if len(side_a) == 1 and len(side_b) == 1:
        return [(side_a[0], side_b[0])] if side_a != side_b else []
    by_rest = {override_set(arm) - wanted_b: arm for arm in side_b}
    pairs = []
    for arm in side_a:
        match = by_rest.get(override_set(arm) - wanted_a)
        if match is not None and match != arm:
            pairs.append((arm, match))
    return pairs


def paired_predictions(run_a: Run, run_b: Run, test_set: str) -> pd.DataFrame:
    """The two runs' predictions on ``test_set`` matched by path: ``path``, ``label``, ``patient``,
    ``prob_a``, ``prob_b``. Different images are a one-line error."""
    table_a, table_b = run_a.predictions(test_set), run_b.predictions(test_set)
    merged = table_a[["path", "label", "prob"]].merge(
        table_b[["path", "label", "prob"]], on="path", suffixes=("_a", "_b")
    )
    if (
        len(merged) != len(table_a)
        or len(merged) != len(table_b)
        or (merged["label_a"] != merged["label_b"]).any()
    ):
        raise CxrsynError(
            f"test set {test_set!r} differs between {run_a.folder} and {run_b.folder}; paired tests "
            "need both runs scored on the same images"
        )
    patients = dict(zip(table_a["path"], patients_of(table_a), strict=True))
    return pd.DataFrame(
        {
            "path": merged["path"],
            "label": merged["label_a"],
            "patient": merged["path"].map(patients),
            "prob_a": merged["prob_a"],
            "prob_b": merged["prob_b"],
        }
    )


def seed_pairs(study: Study, arm_a: str, arm_b: str) -> list[tuple[Run, Run]]:
    """Runs of the two arms that share a seed (the paired design); unpaired runs are reported."""
    runs_b = {run.seed: run for run in study.of_arm(arm_b)}
    pairs = []
    for run_a in study.of_arm(arm_a):
        run_b = runs_b.get(run_a.seed)
        if run_b is None:
            print(f"report: {arm_a} seed {run_a.seed} has no run of {arm_b} with that seed; not paired")
            continue
        pairs.append((run_a, run_b))
    return pairs


def compare_arms(
    study: Study, pairs: Sequence[tuple[str, str]], resampling: Resampling = Resampling()
) -> pd.DataFrame:
    """Per seed (descriptive): for each pair (a, b), test set and seed both arms ran, DeLong's test with
    Obuchowski's patient-clustered variance and the patient-clustered paired bootstrap of a - b on the same
    images (rows matched by path)."""
    rows = []
    for arm_a, arm_b in pairs:
        for run_a, run_b in seed_pairs(study, arm_a, arm_b):
            for name in run_a.metrics["test_sets"]:
                if name not in run_b.metrics["test_sets"]:
                    continue
                paired = paired_predictions(run_a, run_b, name)
                labels, patients = paired["label"].to_numpy(), paired["patient"].to_numpy()
                a, b = paired["prob_a"].to_numpy(), paired["prob_b"].to_numpy()
                test = delong(labels, a, b, resampling.alpha, patients=patients)
                boot = paired_bootstrap(
                    labels, a, b, resampling.n_resamples, resampling.seed, resampling.alpha, patients=patients
                )
                rows.append(
                    {
                        "arm_a": arm_a,
                        "arm_b": arm_b,
                        "test_set": name,
                        "seed": run_a.seed,
                        "n": len(paired),
                        "n_patients": int(paired["patient"].nunique()),
                        "auroc_a": test["auroc_a"],
                        "auroc_b": test["auroc_b"],
                        "auroc_diff": test["auroc_diff"],
                        "delong_z": test["z"],
                        "delong_p": test["p_value"],
                        "delong_ci_lo": test["auroc_diff_ci"][0],
                        "delong_ci_hi": test["auroc_diff_ci"][1],
                        "delong_method": test["method"],
                        "boot_auroc_diff_lo": boot["auroc_diff_ci"][0],
                        "boot_auroc_diff_hi": boot["auroc_diff_ci"][1],
                        "aupr_diff": boot["aupr_diff"],
                        "boot_aupr_diff_lo": boot["aupr_diff_ci"][0],
                        "boot_aupr_diff_hi": boot["aupr_diff_ci"][1],
                    }
                )
    return pd.DataFrame(rows)


def study_comparisons(
    study: Study, pairs: Sequence[tuple[str, str]], resampling: Resampling = Resampling()
) -> list[dict[str, Any]]:
    """The study's verdicts: for each pair (a, b) and test set, the mean difference a - b over the seeds
    both arms ran, its CI and p from Student's t with seeds - 1 df on the seed and test-patient variance
    components (``study_difference``; with one seed no CI or p, only the interval conditional on the trained
    models). p values of the pairs compared on one test set are Holm-adjusted together (``p_adjusted``);
    ``underpowered`` marks comparisons over fewer than ``MIN_SEEDS`` seeds."""
    results: list[dict[str, Any]] = []
    for arm_a, arm_b in pairs:
        runs = seed_pairs(study, arm_a, arm_b)
        names = [
            n
            for n in study.test_sets
            if all(n in a.metrics["test_sets"] and n in b.metrics["test_sets"] for a, b in runs)
        ]
        for name in names if runs else []:
            tables = [paired_predictions(a, b, name) for a, b in runs]
            first = tables[0].sort_values("path").reset_index(drop=True)
            aligned = []
            for table in tables:
                table = table.sort_values("path").reset_index(drop=True)
                if not table["path"].equals(first["path"]):
                    raise CxrsynError(
                        f"test set {name!r} holds different images in different seeds of {arm_a} / {arm_b}; "
                        "a study-level comparison needs every seed scored on the same images"
                    )
                aligned.append(table)
            boot = study_difference(
                first["label"].to_numpy(),
                np.stack([t["prob_a"].to_numpy() for t in aligned]),
                np.stack([t["prob_b"].to_numpy() for t in aligned]),
                resampling.n_resamples,
                resampling.seed,
                resampling.alpha,
                patients=first["patient"].to_numpy(),
            )
            verdict = {
                "arm_a": arm_a,
                "arm_b": arm_b,
                "test_set": name,
                "n_seeds": boot["n_seeds"],
                "seeds": [a.seed for a, _ in runs],
                "n": len(first),
                "n_patients": int(first["patient"].nunique()),
                "underpowered": boot["n_seeds"] < MIN_SEEDS,
            }
            for metric in ("auroc", "aupr"):
                verdict[f"delta_{metric}"] = boot[f"delta_{metric}"]
                verdict[f"delta_{metric}_ci"] = boot[f"delta_{metric}_ci"]
            verdict["p"], verdict["p_aupr"] = boot["p_auroc"], boot["p_aupr"]
            verdict["df"] = boot["df"]
            for metric in ("auroc", "aupr"):
                for key in ("se", "variance_seed", "variance_patients"):
                    verdict[f"{key}_{metric}"] = boot[f"{key}_{metric}"]
                if boot["n_seeds"] == 1:
                    verdict[f"conditional_{metric}_ci"] = boot[f"conditional_{metric}_ci"]
            verdict["per_seed_delta_auroc"] = boot["per_seed_delta_auroc"]
            verdict["method"] = boot["method"]
            results.append(verdict)
    for name in dict.fromkeys(result["test_set"] for result in results):
        family = [result for result in results if result["test_set"] == name and result["p"] is not None]
        for key in ("p", "p_aupr"):
            for result, adjusted in zip(family, holm([r[key] for r in family]), strict=True):
                result[f"{key}_adjusted"] = adjusted
        for result in (r for r in results if r["test_set"] == name):
            if result["p"] is None:  # one seed: no test of the recipe, nothing to adjust
                result.update(p_adjusted=None, p_aupr_adjusted=None, adjustment="none (one seed: no test)")
            else:
                result["adjustment"] = (
                    f"Holm over the {len(family)} comparisons on {name}"
                    if len(family) > 1
                    else "none (one comparison)"
                )
    return results


def study_table(verdicts: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The verdicts of ``study_comparisons`` as a flat table (one row per pair and test set; CIs as lo/hi)."""
    rows = []
    for v in verdicts:
        row = {k: v[k] for k in ("arm_a", "arm_b", "test_set", "n_seeds", "n", "n_patients", "underpowered")}
        for metric in ("auroc", "aupr"):
            row[f"delta_{metric}"] = v[f"delta_{metric}"]
            row[f"delta_{metric}_lo"], row[f"delta_{metric}_hi"] = v[f"delta_{metric}_ci"] or (None, None)
            row[f"se_{metric}"] = v[f"se_{metric}"]
            row[f"variance_seed_{metric}"] = v[f"variance_seed_{metric}"]
            row[f"variance_patients_{metric}"] = v[f"variance_patients_{metric}"]
        row.update(
            {k: v[k] for k in ("df", "p", "p_adjusted", "p_aupr", "p_aupr_adjusted", "adjustment", "method")}
        )
        for metric in ("auroc", "aupr"):  # set by cxrsyn.reporting.endpoints.label_endpoints
            row[f"role_{metric}"] = (v.get("role") or {}).get(metric)
            row[f"family_{metric}"] = (v.get("family") or {}).get(metric)
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- numeric arms
def numeric_arm_key(study: Study) -> str | None:
    """The one varying override whose values are all numbers (a count, a fraction, k), if there is one:
    such a study is read as a curve of the metric against that value."""
    per_run = [override_map(run) for run in study.runs]
    varying = varying_keys(per_run)
    numeric = [key for key in varying if all(_is_number(overrides.get(key)) for overrides in per_run)]
    return numeric[0] if len(numeric) == 1 else None


def _is_number(value: str | None) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return value is not None


def arm_curves(study: Study, resampling: Resampling = Resampling()) -> list[dict[str, Any]]:
    """For a study with a numeric arm (``numeric_arm_key``): per test set, line (the other varying overrides)
    and arm value, the mean AUROC and AUPR over seeds with the study-level CI (``study_mean``: t with seeds -
    1 df; with one seed, the interval conditional on the trained model)."""
    key = numeric_arm_key(study)
    if key is None:
        return []
    points = []
    for arm in study.arms:
        runs = study.of_arm(arm)
        overrides = override_map(runs[0])
        line = ",".join(part for part in arm.split(",") if not part.startswith(f"{key}=")) or "all"
        for name in study.test_sets:
            tables = [
                run.predictions(name).sort_values("path").reset_index(drop=True)
                for run in runs
                if name in run.metrics["test_sets"]
            ]
            if not tables or any(not t["path"].equals(tables[0]["path"]) for t in tables):
                continue
            boot = study_mean(
                tables[0]["label"].to_numpy(),
                np.stack([t["prob"].to_numpy() for t in tables]),
                resampling.n_resamples,
                resampling.seed,
                resampling.alpha,
                patients=patients_of(tables[0]),
            )
            points.append(
                {"key": key, "value": float(overrides[key]), "line": line, "test_set": name, **boot}
            )
    return sorted(points, key=lambda point: (point["test_set"], point["line"], point["value"]))
