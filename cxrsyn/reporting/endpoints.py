"""What a study's comparisons claim: which one is its primary endpoint, which are secondary, which p values are
Holm-adjusted together, and the comparison of two test sets with the same models.

A study names its primary endpoint in ``experiment.primary`` (``conf/experiment/*.yaml``):
``{test_set, metric}`` makes the comparisons between arms on that test set, for that metric, the primary
family; ``comparison: test_sets`` makes it the comparisons between test sets with the same models
(``experiment.compare_test_sets``) that involve ``test_set``. Every other comparison is secondary.

Families (the p values Holm-adjusted together): the comparisons between arms of one metric on one test set
(``p_adjusted`` for AUROC, ``p_aupr_adjusted`` for AUPR), and the comparisons of one pair of test sets over
the arms. Families are not adjusted across one another: a secondary family does not dilute the primary one.

Between test sets (``test_set_comparisons``): per arm, AUROC on set a minus AUROC on set b for the same
models, averaged over seeds, patients matched across the sets by id
(``cxrsyn.evaluation.statistics.auroc_set_difference``). AUROC only: AUPR depends on the prevalence, which
two selections of one dataset change by design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.evaluation.outputs import patients_of
from cxrsyn.evaluation.statistics import auroc_set_difference, holm
from cxrsyn.reporting.runs import Study

METRICS = ("auroc", "aupr")
METRIC_LABELS = {"auroc": "AUROC", "aupr": "AUPR"}
P_KEYS = {"auroc": "p", "aupr": "p_aupr"}  # the p value of each metric in an arm comparison
COMPARISONS = ("arms", "test_sets")


def primary_endpoint(primary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``experiment.primary`` as ``{test_set, metric, comparison}`` (comparison ``arms`` unless it says
    ``test_sets``), or None when the study names none; a malformed one is a one-line error."""
    if not primary:
        return None
    endpoint = {"comparison": "arms", **dict(primary)}
    if endpoint.get("metric") not in METRICS or not endpoint.get("test_set"):
        raise CxrsynError(
            f"experiment.primary={dict(primary)}: give {{test_set: <name>, metric: auroc|aupr}}"
        )
    if endpoint["comparison"] not in COMPARISONS:
        raise CxrsynError(
            f"experiment.primary.comparison={endpoint['comparison']!r}: use one of {', '.join(COMPARISONS)}"
        )
    if endpoint["comparison"] == "test_sets" and endpoint["metric"] != "auroc":
        raise CxrsynError("experiment.primary: test sets are compared by AUROC only; use metric: auroc")
    return endpoint


def describe(endpoint: Mapping[str, Any] | None) -> str:
    """The primary endpoint in words."""
    if endpoint is None:
        return "none named (experiment.primary): every comparison is reported as secondary"
    metric = METRIC_LABELS[endpoint["metric"]]
    if endpoint["comparison"] == "test_sets":
        return f"Δ{metric} between test sets with the same models, involving {endpoint['test_set']}"
    return f"Δ{metric} between arms on {endpoint['test_set']}"


def study_set_comparisons(
    study: Study, pairs: Sequence[Sequence[str]] | None, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """``test_set_comparisons`` of every pair in ``experiment.compare_test_sets``, for every arm whose runs
    were tested on both sets; a pair no run has is reported and skipped."""
    results = []
    for pair in pairs or []:
        a, b = (str(name) for name in pair)
        arm_tables = {
            arm: [
                (run.seed, _with_patients(run.predictions(a)), _with_patients(run.predictions(b)))
                for run in study.of_arm(arm)
                if a in run.metrics["test_sets"] and b in run.metrics["test_sets"]
            ]
            for arm in study.arms
        }
        if not any(arm_tables.values()):
            print(f"report: experiment.compare_test_sets [{a}, {b}]: no run was tested on both; not compared")
            continue
        results += test_set_comparisons(arm_tables, a, b, alpha)
    return results


def _with_patients(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(patient=patients_of(table))


def test_set_comparisons(
    arm_tables: Mapping[str, Sequence[tuple[int, pd.DataFrame, pd.DataFrame]]],
    test_set_a: str,
    test_set_b: str,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Per arm: AUROC on ``test_set_a`` minus on ``test_set_b`` of the same models. ``arm_tables`` maps an
    arm to its runs as ``(seed, predictions on a, predictions on b)`` (``path``, ``label``, ``prob``,
    ``patient``). The arms' p values are Holm-adjusted together (one family per pair of test sets)."""
    results = []
    for arm, runs in arm_tables.items():
        if not runs:
            continue
        tables_a = _aligned([table for _, table, _ in runs], test_set_a, arm)
        tables_b = _aligned([table for _, _, table in runs], test_set_b, arm)
        first_a, first_b = tables_a[0], tables_b[0]
        result = auroc_set_difference(
            first_a["label"].to_numpy(),
            np.stack([table["prob"].to_numpy() for table in tables_a]),
            first_a["patient"].astype(str).to_numpy(),
            first_b["label"].to_numpy(),
            np.stack([table["prob"].to_numpy() for table in tables_b]),
            first_b["patient"].astype(str).to_numpy(),
            alpha,
        )
        per_seed = result.pop("per_seed")
        results.append(
            {
                "arm": arm,
                "test_set_a": test_set_a,
                "test_set_b": test_set_b,
                "seeds": [seed for seed, _, _ in runs],
                "n_a": len(first_a),
                "n_b": len(first_b),
                **result,
                "per_seed_delta_auroc": [seed["delta_auroc"] for seed in per_seed],
                "per_seed_p": [seed["p"] for seed in per_seed],
            }
        )
    adjusted = holm([result["p"] for result in results]) if results else []
    for result, value in zip(results, adjusted, strict=True):
        result["p_adjusted"] = value
        result["adjustment"] = (
            f"Holm over the {len(results)} arms" if len(results) > 1 else "none (one comparison)"
        )
    return results


def set_table(verdicts: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The comparisons between test sets as a flat table (CIs as lo/hi, per-seed lists left out)."""
    rows = []
    for v in verdicts:
        row = {key: value for key, value in v.items() if not key.startswith("per_seed") and key != "seeds"}
        row["delta_auroc_lo"], row["delta_auroc_hi"] = row.pop("delta_auroc_ci")
        rows.append(row)
    return pd.DataFrame(rows)


def _aligned(tables: Sequence[pd.DataFrame], name: str, arm: str) -> list[pd.DataFrame]:
    """The seeds' predictions on one test set, in path order; every seed must hold the same images."""
    ordered = [table.sort_values("path").reset_index(drop=True) for table in tables]
    for table in ordered[1:]:
        if not table["path"].equals(ordered[0]["path"]):
            raise CxrsynError(
                f"test set {name!r} holds different images in different seeds of {arm}; comparing test sets "
                "needs every seed scored on the same images"
            )
    return ordered


def family_name(metric: str, test_set: str) -> str:
    return f"Δ{METRIC_LABELS[metric]} between arms on {test_set}"


def set_family_name(test_set_a: str, test_set_b: str) -> str:
    return f"ΔAUROC {test_set_a} - {test_set_b}, same models"


def label_endpoints(
    arm_verdicts: Sequence[dict[str, Any]],
    set_verdicts: Sequence[dict[str, Any]],
    endpoint: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """Give every comparison its ``role`` (primary or secondary) and ``family``: per metric for the
    comparisons between arms (``{"auroc": ..., "aupr": ...}``), one of each for those between test sets.
    Returns the families: name, role, number of comparisons and how their p values were adjusted."""
    families: dict[str, dict[str, Any]] = {}

    def join(name: str, role: str) -> None:
        family = families.setdefault(name, {"family": name, "role": role, "comparisons": 0})
        family["comparisons"] += 1

    for verdict in arm_verdicts:
        verdict["role"], verdict["family"] = {}, {}
        for metric in METRICS:
            primary = (
                endpoint is not None
                and endpoint["comparison"] == "arms"
                and endpoint["metric"] == metric
                and endpoint["test_set"] == verdict["test_set"]
            )
            verdict["role"][metric] = "primary" if primary else "secondary"
            verdict["family"][metric] = family_name(metric, verdict["test_set"])
            join(verdict["family"][metric], verdict["role"][metric])
    for verdict in set_verdicts:
        primary = (
            endpoint is not None
            and endpoint["comparison"] == "test_sets"
            and endpoint["test_set"] in (verdict["test_set_a"], verdict["test_set_b"])
        )
        verdict["role"] = "primary" if primary else "secondary"
        verdict["family"] = set_family_name(verdict["test_set_a"], verdict["test_set_b"])
        join(verdict["family"], verdict["role"])
    for family in families.values():
        family["adjustment"] = "Holm" if family["comparisons"] > 1 else "none (one comparison)"
    return sorted(families.values(), key=lambda family: family["role"] != "primary")


def endpoint_lines(endpoint: Mapping[str, Any] | None, families: Sequence[Mapping[str, Any]]) -> list[str]:
    """The sentences results.md gives the endpoints: the primary one and the Holm families."""
    primary = [family["family"] for family in families if family["role"] == "primary"]
    if endpoint is None:
        stated = describe(endpoint)
    elif primary:
        stated = f"{'; '.join(primary)} (experiment.primary). Every other comparison is secondary"
    else:
        stated = f"{describe(endpoint)} (experiment.primary), which no comparison of these runs matches"
    listed = "; ".join(
        f"{family['family']}: {family['comparisons']} ({family['role']}"
        + (", Holm-adjusted together)" if family["comparisons"] > 1 else ", one comparison)")
        for family in families
    )
    return [
        f"**Primary endpoint:** {stated}.",
        "",
        f"**Adjusted together (Holm), family by family, never across families:** {listed or 'no comparisons'}.",
        "",
    ]


def set_comparison_lines(verdicts: Sequence[Mapping[str, Any]], alpha: float) -> list[str]:
    """results.md's section on comparisons between test sets with the same models."""
    if not verdicts:
        return []
    level = f"{100 * (1 - alpha):g}%"
    lines = ["## Between test sets, same models (a - b)", ""]
    for v in verdicts:
        adjusted = "" if v["adjustment"].startswith("none") else f", Holm-adjusted {_p(v['p_adjusted'])}"
        lines.append(
            f"- {v['role']}: {v['arm']}: AUROC on {v['test_set_a']} - on {v['test_set_b']} ({v['n_seeds']} "
            f"seed(s); {v['n_a']} and {v['n_b']} images, {v['n_patients_shared']} patients in both): ΔAUROC "
            f"{v['delta_auroc']:+.3f} [{level} CI {v['delta_auroc_ci'][0]:+.3f}, {v['delta_auroc_ci'][1]:+.3f}], "
            f"p {_p(v['p'])}{adjusted}"
        )
    lines += ["", f"Method: {verdicts[0]['method']}.", ""]
    return lines


def _p(value: float) -> str:
    return "<0.001" if value < 1e-3 else f"{value:.3f}"
