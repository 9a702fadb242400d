"""Uncertainty and comparisons for binary classifiers, with test images clustered by patient.

Methods (so a paper can cite them):

- **Resampling unit.** Images of one patient are not independent (Kermany has several per patient), so every
  bootstrap here resamples patients, not images. Stratified by class: the unit is (patient, class), i.e. a
  patient's positive images are drawn together from the positive stratum and its negative images together
  from the negative stratum (a patient with images of both classes counts once in each stratum). Each
  resample draws as many units of each class as there are, with replacement, and weighs every image by the
  number of times its unit was drawn. With one image per patient this is exactly the stratified image
  bootstrap (the same random draws, so the same interval).
- **CIs** of AUROC and AUPR: that patient-clustered stratified bootstrap, percentile interval over
  ``n_resamples`` resamples (default 2000), seeded.
- **DeLong's test** for two correlated AUROCs on the same images (DeLong, DeLong and Clarke-Pearson 1988),
  with placement values from the fast mid-rank algorithm of Sun and Xu (2014) and, for clustered images,
  Obuchowski's (1997) variance: placement values are summed per patient before their (co)variances are
  taken. With one image per patient it is DeLong's variance exactly.
- **Paired bootstrap** of the AUROC and AUPR differences of two models: the same patient resamples applied
  to both models' scores, percentile CI of the difference.
- **Study-level comparison** of two arms over seeds (``study_difference``; one arm: ``study_mean``). Seed s
  gives d_s, metric(arm a) - metric(arm b) of the runs with seed s on the whole test set; the estimate is
  their mean d. Every seed is scored on the same test patients (a crossed design), so d_s = mu + t_s + e_s
  with t_s the seed's effect (variance sigma^2) and e_s the test-sampling error, of variance v and
  covariance c between seeds (shared patients). Then Var(d) = sigma^2 / S + (v + (S - 1) c) / S, and the
  sample variance s^2 of the d_s has expectation sigma^2 + v - c, so Var(d) = E[s^2] / S + c. v and c come
  from the patient bootstrap (one resample shared by every seed and both arms; c floored at 0), and
  se^2 = s^2 / S + c, reported as a seed component (s^2 - (v - c)) / S (negative when the seeds scatter less
  than test-patient noise alone would make them) plus a patient component (v + (S - 1) c) / S (the patient
  bootstrap variance of the seed mean). Interval and two-sided p from Student's t with S - 1 df: exact
  under normality when seeds or unshared noise dominate, cautious when the shared part c dominates (it is
  then known far better than S - 1 df assume). Welch-Satterthwaite df were tried and rejected (false-positive
  rate up to 0.12). With S = 1 no seed variance is estimable: no interval or p about the recipe, only a
  patient-only interval conditional on the one trained model per arm. Error rates by simulation:
  ``benchmarks/study_level_error_rates.py`` and docs/protocol.md (the two-level percentile bootstrap this
  replaced rejected a true null in up to 0.46 of studies).
- **Holm's** step-down adjustment of the p values of several comparisons (``holm``).
- **One model on two test sets** (``auroc_set_difference``): AUROC on set a minus AUROC on set b for the same
  models, where the sets share patients (RSNA's paper selection is a subset of the full Target task). Both
  AUROCs are linearised by their placement values; a patient's images in either set form one cluster, and
  the variance of the difference is Obuchowski's clustered variance of those per-patient contributions (it
  is exactly the clustered DeLong variance when the two sets hold the same images). Over seeds: the mean
  difference, with SE^2 = s^2(per-seed differences) / S + the patient variance of the seed-mean difference,
  referred to t with S - 1 degrees of freedom (one seed: the per-model variance, normal).
- **Out-of-fold AUROC** of a classifier cross-fitted on the same images it is scored on
  (``out_of_fold_auroc``): the group-clustered stratified percentile bootstrap of the pooled out-of-fold
  scores, each side of the interval widened by sqrt(2) around the AUROC. Why: the scores of fold j come from
  a model fitted on fold k and those of fold k from one fitted on fold j, so each pair of folds' chance
  agreement enters the AUROC twice; with no signal this about doubles its variance over that of scores from
  a fixed model, which the bootstrap alone measures (it covers 0.5 only ~85% of the time; with the widening
  ~95%, tests/evaluation/test_out_of_fold.py). Exact for linear learners in the no-signal regime,
  conservative where a learner's scores hold label-free variation.

Resampled metrics are computed from image weights on scores sorted once (``WeightedScores``), which equals
recomputing AUROC and average precision on the resampled image list (tested against scikit-learn on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

METRIC_NAMES = ("auroc", "aupr")
CHUNK = 128  # resamples per vectorised block: bounds memory at CHUNK x n floats per array


# ------------------------------------------------------------------------------------------------ clusters
@dataclass(frozen=True)
class Clusters:
    """The resampling units of a test set: image i belongs to unit ``unit[i]``; units ``0..n_pos_units-1``
    hold positive images, the rest negative ones (units numbered by first appearance in image order)."""

    unit: np.ndarray
    n_pos_units: int
    n_units: int

    @classmethod
    def of(cls, labels: np.ndarray, patients: Sequence[Any] | np.ndarray | None = None) -> Clusters:
        """Units = (patient, class); ``patients`` None means one patient per image."""
        labels = np.asarray(labels).astype(bool)
        ids = np.arange(labels.size) if patients is None else pd.factorize(pd.Series(patients))[0]
        unit = np.empty(labels.size, np.int64)
        counts = []
        for label in (True, False):
            rows = np.flatnonzero(labels == label)
            # first-appearance order, so singleton units follow image order (see the module docstring)
            codes = pd.factorize(ids[rows])[0]
            unit[rows] = codes + sum(counts)
            counts.append(int(codes.max()) + 1 if rows.size else 0)
        return cls(unit, counts[0], sum(counts))

    @property
    def clustered(self) -> bool:
        """True when some unit holds more than one image."""
        return self.n_units < self.unit.size


def unit_draws(clusters: Clusters, n_resamples: int, seed: int):
    """The random draws of ``n_resamples`` resamples, in blocks of up to ``CHUNK`` rows: for each block,
    (rows x n_units) unit numbers, the positive units drawn first (``rng.choice`` over the positive units),
    then the negative ones. Blocks keep memory at ``CHUNK`` x n whatever the number of resamples."""
    rng = np.random.default_rng(seed)
    n_pos, n_neg = clusters.n_pos_units, clusters.n_units - clusters.n_pos_units
    for start in range(0, n_resamples, CHUNK):
        rows = min(CHUNK, n_resamples - start)
        positives = rng.choice(n_pos, size=(rows, n_pos), replace=True)
        negatives = n_pos + rng.choice(n_neg, size=(rows, n_neg), replace=True)
        yield np.concatenate([positives, negatives], axis=1)


def resample_weights(clusters: Clusters, n_resamples: int, seed: int):
    """Blocks of image weights, one row per resample: how often each image's unit was drawn."""
    for draws in unit_draws(clusters, n_resamples, seed):
        unit_counts = np.zeros((len(draws), clusters.n_units), np.float64)
        np.add.at(unit_counts, (np.arange(len(draws))[:, None], draws), 1.0)
        yield unit_counts[:, clusters.unit]


# --------------------------------------------------------------------------------------- weighted metrics
class WeightedScores:
    """One model's scores sorted once; AUROC and average precision under any image weights.

    With integer weights (bootstrap multiplicities) the results equal AUROC (Mann-Whitney, ties 1/2) and
    average precision (scikit-learn's step-wise definition) of the list where image i appears ``w_i`` times.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        scores = np.asarray(scores, dtype=np.float64)
        self.order = np.argsort(-scores, kind="mergesort")
        ordered = scores[self.order]
        self.starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]  # first row of each tie group
        self.positive = np.asarray(labels).astype(bool)[self.order]

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """``{"auroc": (B,), "aupr": (B,)}`` for ``weights`` of shape (B, n) in the original image order."""
        weights = np.atleast_2d(weights)[:, self.order]
        pos = np.add.reduceat(np.where(self.positive, weights, 0.0), self.starts, axis=1)
        neg = np.add.reduceat(np.where(self.positive, 0.0, weights), self.starts, axis=1)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        total_pos, total_neg = tp[:, -1:], fp[:, -1:]
        # a positive outranks the negatives in lower groups and ties half of those in its own group
        auroc = (pos * (total_neg - fp + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)[:, 0]
        called = tp + fp
        precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
        aupr = (pos / total_pos * precision).sum(axis=1)
        return {"auroc": auroc, "aupr": aupr}


def _resampled_metrics(
    labels: np.ndarray, score_sets: Sequence[np.ndarray], clusters: Clusters, n_resamples: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """For each score vector: AUROC and AUPR over the same ``n_resamples`` patient resamples."""
    sorted_sets = [WeightedScores(labels, scores) for scores in score_sets]
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in score_sets]
    for weights in resample_weights(clusters, n_resamples, seed):
        for part, sorted_scores in zip(parts, sorted_sets, strict=True):
            part.append(sorted_scores.metrics(weights))
    return [{name: np.concatenate([p[name] for p in part]) for name in METRIC_NAMES} for part in parts]


# ---------------------------------------------------------------------------------------------- intervals
def ci_method(n_resamples: int, seed: int, alpha: float, clusters: Clusters) -> str:
    """The sentence metrics.json stores as ``ci_method``."""
    unit = "patient-clustered" if clusters.clustered else "patient-clustered (one image per patient)"
    return (
        f"{unit} stratified percentile bootstrap: (patient, class) units resampled with replacement within "
        f"each class, {n_resamples} resamples, seed {seed}, {100 * (1 - alpha):g}% interval"
    )


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    patients: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """``{"auroc_ci": [lo, hi], "aupr_ci": [lo, hi], "ci_method": ...}`` by the patient-clustered stratified
    percentile bootstrap (``patients`` None: one image per patient)."""
    labels = np.asarray(labels)
    clusters = Clusters.of(labels, patients)
    (values,) = _resampled_metrics(labels, [scores], clusters, n_resamples, seed)
    result: dict[str, Any] = {f"{name}_ci": _percentiles(values[name], alpha) for name in METRIC_NAMES}
    result["ci_method"] = ci_method(n_resamples, seed, alpha, clusters)
    return result


def point_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC and AUPR of ``scores`` on every image once (weights all 1)."""
    values = WeightedScores(labels, scores).metrics(np.ones((1, np.asarray(labels).size)))
    return {name: float(values[name][0]) for name in METRIC_NAMES}


def paired_bootstrap(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    patients: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Differences a - b of AUROC and AUPR with percentile CIs from the same patient resamples for both."""
    labels = np.asarray(labels)
    clusters = Clusters.of(labels, patients)
    point_a, point_b = point_metrics(labels, scores_a), point_metrics(labels, scores_b)
    values_a, values_b = _resampled_metrics(labels, [scores_a, scores_b], clusters, n_resamples, seed)
    result: dict[str, Any] = {}
    for name in METRIC_NAMES:
        diffs = values_a[name] - values_b[name]
        result[f"{name}_diff"] = point_a[name] - point_b[name]
        result[f"{name}_diff_ci"] = _percentiles(diffs, alpha)
        result[f"{name}_diff_se"] = float(diffs.std(ddof=1))
    return result


def study_difference(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    patients: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Study-level difference of two arms over seeds: ``scores_a`` and ``scores_b`` are (seeds, images),
    row s of each the run with seed s, columns the same test images. See the module docstring.

    Returns ``n_seeds``, ``df`` and ``method``, and per metric m: ``delta_<m>`` (the mean over seeds of the
    per-seed difference on the whole test set), ``delta_<m>_ci``, ``p_<m>``, ``se_<m>``,
    ``variance_seed_<m>``, ``variance_patients_<m>`` and ``per_seed_delta_<m>``. With one seed no seed
    variance is estimable: ``delta_<m>_ci`` and ``p_<m>`` are None, and ``conditional_<m>_ci`` is the
    patient-only interval of that one pair of trained models."""
    labels = np.asarray(labels)
    scores_a, scores_b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    if scores_a.shape != scores_b.shape or scores_a.shape[1] != labels.size:
        raise ValueError(f"scores {scores_a.shape} and {scores_b.shape} must both be (seeds, {labels.size})")
    n_seeds = len(scores_a)
    clusters = Clusters.of(labels, patients)
    resampled = _resampled_metrics(labels, [*scores_a, *scores_b], clusters, n_resamples, seed)
    result: dict[str, Any] = {"n_seeds": n_seeds, "df": n_seeds - 1 if n_seeds > 1 else None}
    for name in METRIC_NAMES:
        per_seed = np.array(
            [
                point_metrics(labels, a)[name] - point_metrics(labels, b)[name]
                for a, b in zip(scores_a, scores_b, strict=True)
            ]
        )
        replicates = np.stack([resampled[s][name] - resampled[n_seeds + s][name] for s in range(n_seeds)])
        summary = over_seeds(per_seed, replicates, alpha)
        result[f"delta_{name}"] = summary["estimate"]
        result[f"delta_{name}_ci"] = summary["ci"]
        result[f"p_{name}"] = summary["p"]
        for key in ("se", "variance_seed", "variance_patients"):
            result[f"{key}_{name}"] = summary[key]
        result[f"per_seed_delta_{name}"] = per_seed.tolist()
        if n_seeds == 1:
            result[f"conditional_{name}_ci"] = summary["conditional_ci"]
    result["method"] = study_method(
        "the per-seed difference a - b", n_seeds, clusters, n_resamples, seed, alpha
    )
    return result


def study_mean(
    labels: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    patients: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """One arm over seeds: ``scores`` (seeds, images). The mean over seeds of AUROC and AUPR on the whole test
    set with the interval of ``study_difference``'s method (``<m>_ci``; None with one seed, which gets
    ``conditional_<m>_ci``), its variance components and ``method``."""
    labels = np.asarray(labels)
    scores = np.atleast_2d(scores)
    n_seeds = len(scores)
    clusters = Clusters.of(labels, patients)
    resampled = _resampled_metrics(labels, list(scores), clusters, n_resamples, seed)
    result: dict[str, Any] = {"n_seeds": n_seeds, "df": n_seeds - 1 if n_seeds > 1 else None}
    for name in METRIC_NAMES:
        per_seed = np.array([point_metrics(labels, row)[name] for row in scores])
        summary = over_seeds(per_seed, np.stack([resampled[s][name] for s in range(n_seeds)]), alpha)
        result[name] = summary["estimate"]
        result[f"{name}_ci"] = summary["ci"]
        for key in ("se", "variance_seed", "variance_patients"):
            result[f"{key}_{name}"] = summary[key]
        if n_seeds == 1:
            result[f"conditional_{name}_ci"] = summary["conditional_ci"]
    result["method"] = study_method("the per-seed metric", n_seeds, clusters, n_resamples, seed, alpha)
    return result


def over_seeds(per_seed: np.ndarray, replicates: np.ndarray, alpha: float) -> dict[str, Any]:
    """The mean over seeds of a per-seed statistic with its t interval (module docstring, study level).

    ``per_seed`` (S,): the statistic of each seed on the whole test set; ``replicates`` (S, B): the same on
    B patient resamples, each shared by every seed. Returns ``estimate``, ``se``, ``ci``, ``p`` (two-sided, of
    a mean of 0), ``variance_seed`` and ``variance_patients`` (the two parts of se^2); with one seed ``se``,
    ``ci``, ``p`` and ``variance_seed`` are None and ``conditional_ci`` is the percentile interval of the
    replicates."""
    per_seed = np.asarray(per_seed, np.float64)
    replicates = np.atleast_2d(np.asarray(replicates, np.float64))
    n_seeds = per_seed.size
    estimate = float(per_seed.mean())
    if n_seeds == 1:
        return {
            "estimate": estimate,
            "se": None,
            "ci": None,
            "p": None,
            "variance_seed": None,
            "variance_patients": float(replicates[0].var(ddof=1)),
            "conditional_ci": _percentiles(replicates[0], alpha),
        }
    covariance = np.cov(replicates)
    within = float(np.mean(np.diag(covariance)))  # v: one seed's test-patient variance
    # c: the covariance between seeds (shared patients), the part more seeds do not average away
    shared = max(0.0, float((covariance.sum() - np.trace(covariance)) / (n_seeds * (n_seeds - 1))))
    # se^2 = s^2 / S + c, split as (s^2 - (v - c)) / S for seeds + (v + (S - 1) c) / S for test patients
    variance_patients = (within + (n_seeds - 1) * shared) / n_seeds
    variance_seed = (float(per_seed.var(ddof=1)) - (within - shared)) / n_seeds
    se = float(np.sqrt(max(0.0, variance_seed + variance_patients)))  # = sqrt(s^2 / S + c)
    df = n_seeds - 1
    half = float(student_t.ppf(1.0 - alpha / 2.0, df)) * se
    # se 0: every seed and resample gave the same value (e.g. identical arms)
    p = float(2.0 * student_t.sf(abs(estimate) / se, df)) if se > 0 else float(estimate == 0)
    return {
        "estimate": estimate,
        "se": se,
        "ci": [estimate - half, estimate + half],
        "p": p,
        "variance_seed": variance_seed,
        "variance_patients": variance_patients,
    }


def study_method(
    statistic: str, n_seeds: int, clusters: Clusters, n_resamples: int, seed: int, alpha: float
) -> str:
    """The sentence a study-level result stores as ``method``."""
    units = "clustered" if clusters.clustered else "one image each"
    patients = (
        f"test patients ({units}; (patient, class) units stratified by class) resampled {n_resamples} times "
        f"(seed {seed}), each resample shared by every seed and arm"
    )
    level = f"{100 * (1 - alpha):g}%"
    if n_seeds == 1:
        return (
            "1 seed: no seed variance is estimable, so no interval or p about the recipe; the conditional "
            f"CI is a percentile {level} interval over {patients}, and holds for this one trained model per "
            "arm only"
        )
    return (
        f"mean over {n_seeds} seeds of {statistic} on the whole test set; se^2 = s^2 / {n_seeds} + c, with s^2 "
        f"the variance of the per-seed values and c the covariance between seeds of the patient bootstrap "
        f"({patients}); {level} CI and two-sided p from Student's t with {n_seeds - 1} df"
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values, in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    k = p.size
    order = np.argsort(p, kind="mergesort")
    adjusted = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * p[order]))
    result = np.empty(k)
    result[order] = adjusted
    return result.tolist()


# ---------------------------------------------------------------------------------- cross-fitted AUROC
CROSS_FIT_WIDENING = float(np.sqrt(2.0))


def out_of_fold_auroc(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """AUROC of out-of-fold ``scores`` (each image scored by a model fitted without its group) with the
    interval of the module docstring: ``{"auroc", "auroc_ci", "method"}``; ``groups`` None: one per image."""
    labels = np.asarray(labels)
    clusters = Clusters.of(labels, groups)
    point = point_metrics(labels, scores)["auroc"]
    (values,) = _resampled_metrics(labels, [scores], clusters, n_resamples, seed)
    low, high = _percentiles(values["auroc"], alpha)
    widened = [
        max(0.0, point - CROSS_FIT_WIDENING * (point - low)),
        min(1.0, point + CROSS_FIT_WIDENING * (high - point)),
    ]
    unit = "group-clustered" if clusters.clustered else "one image per group"
    return {
        "auroc": point,
        "auroc_ci": widened,
        "method": (
            f"pooled out-of-fold scores; {unit} stratified percentile bootstrap ((group, class) units "
            f"resampled within each class, {n_resamples} resamples, seed {seed}), each side of the "
            f"{100 * (1 - alpha):g}% interval widened by sqrt(2) around the AUROC for the dependence "
            "cross-fitting creates between folds"
        ),
    }


# ------------------------------------------------------------------------------------------------ DeLong
def delong(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    alpha: float = 0.05,
    patients: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """DeLong's test of AUROC(a) = AUROC(b) on the same images; with ``patients``, Obuchowski's clustered
    variance (placement values summed per patient)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.stack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)])
    aucs, covariance = auroc_covariance(labels, scores, patients)
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ covariance @ contrast)
    diff = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(variance, 0.0)))
    z = diff / se if se > 0 else (0.0 if diff == 0 else np.inf * np.sign(diff))
    p_value = float(2.0 * norm.sf(abs(z)))
    half = norm.ppf(1.0 - alpha / 2.0) * se
    clustered = patients is not None and Clusters.of(labels, patients).clustered
    return {
        "auroc_a": float(aucs[0]),
        "auroc_b": float(aucs[1]),
        "auroc_diff": diff,
        "se": se,
        "z": float(z),
        "p_value": p_value,
        "auroc_diff_ci": [float(diff - half), float(diff + half)],
        "method": "DeLong, Obuchowski's patient-clustered variance" if clustered else "DeLong",
    }


def auroc_covariance(
    labels: np.ndarray, scores: np.ndarray, patients: Sequence[Any] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of the rows of ``scores`` (models x images) and their covariance matrix: DeLong's, or
    Obuchowski's (1997) for images clustered in ``patients``."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = scores[:, labels], scores[:, ~labels]
    m, n = positives.shape[1], negatives.shape[1]
    aucs, v10, v01 = _structural_components(positives, negatives)
    if patients is None:
        return aucs, np.atleast_2d(np.cov(v10) / m + np.cov(v01) / n)
    ids = pd.factorize(pd.Series(patients))[0]
    n_clusters = int(ids.max()) + 1
    pos_ids, neg_ids = ids[labels], ids[~labels]
    # per patient: sums of placement values (models x patients) and image counts of each class
    sum10 = np.stack([np.bincount(pos_ids, weights=row, minlength=n_clusters) for row in v10])
    sum01 = np.stack([np.bincount(neg_ids, weights=row, minlength=n_clusters) for row in v01])
    m_i = np.bincount(pos_ids, minlength=n_clusters).astype(np.float64)
    n_i = np.bincount(neg_ids, minlength=n_clusters).astype(np.float64)
    dev10 = sum10 - m_i * aucs[:, None]
    dev01 = sum01 - n_i * aucs[:, None]
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    s10 = i10 / ((i10 - 1) * m) * (dev10 @ dev10.T)
    s01 = i01 / ((i01 - 1) * n) * (dev01 @ dev01.T)
    s11 = n_clusters / (n_clusters - 1) * (dev10 @ dev01.T)
    return aucs, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def _structural_components(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sun and Xu's mid-rank formulation: AUCs and the per-image placement values V10, V01."""
    m, n = positives.shape[1], negatives.shape[1]
    tx = np.stack([rankdata(row) for row in positives])
    ty = np.stack([rankdata(row) for row in negatives])
    tz = np.stack([rankdata(row) for row in np.concatenate([positives, negatives], axis=1)])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def _percentiles(values: np.ndarray, alpha: float) -> list[float]:
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return [float(low), float(high)]


# ------------------------------------------------------------------------------ one model, two test sets
@dataclass(frozen=True)
class _SetPlacements:
    """Per seed, one test set's AUROC and its per-patient linearised contributions (seeds x patients):
    ``positive`` from its positive images, ``negative`` from its negative ones (module docstring)."""

    auroc: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    has_positive: np.ndarray  # per patient: holds a positive image in this set
    has_negative: np.ndarray


def _set_placements(
    labels: np.ndarray, scores: np.ndarray, ids: np.ndarray, n_clusters: int
) -> _SetPlacements:
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("each test set needs positive and negative images")
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    aucs, v10, v01 = _structural_components(scores[:, labels], scores[:, ~labels])
    pos_ids, neg_ids = ids[labels], ids[~labels]
    m, n = int(labels.sum()), int((~labels).sum())
    m_i = np.bincount(pos_ids, minlength=n_clusters)
    n_i = np.bincount(neg_ids, minlength=n_clusters)
    sum10 = np.stack([np.bincount(pos_ids, weights=row, minlength=n_clusters) for row in v10])
    sum01 = np.stack([np.bincount(neg_ids, weights=row, minlength=n_clusters) for row in v01])
    return _SetPlacements(
        auroc=aucs,
        positive=(sum10 - m_i * aucs[:, None]) / m,
        negative=(sum01 - n_i * aucs[:, None]) / n,
        has_positive=m_i > 0,
        has_negative=n_i > 0,
    )


def _clustered_variance(positive: np.ndarray, negative: np.ndarray, has_pos: np.ndarray, has_neg: np.ndarray):
    """Obuchowski's variance of a sum of per-patient contributions (the last axis), with his small-sample
    factors: i/(i - 1) for the positive and the negative parts (i = patients holding such images) and
    C/(C - 1) for their cross term (C = every patient)."""
    i10, i01, c = int(has_pos.sum()), int(has_neg.sum()), positive.shape[-1]
    return (
        i10 / (i10 - 1) * (positive**2).sum(axis=-1)
        + i01 / (i01 - 1) * (negative**2).sum(axis=-1)
        + 2 * c / (c - 1) * (positive * negative).sum(axis=-1)
    )


def auroc_set_difference(
    labels_a: np.ndarray,
    scores_a: np.ndarray,
    patients_a: Sequence[Any] | np.ndarray,
    labels_b: np.ndarray,
    scores_b: np.ndarray,
    patients_b: Sequence[Any] | np.ndarray,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """AUROC on test set a minus AUROC on test set b, for the same models: ``scores_a`` (seeds, images of a)
    and ``scores_b`` (seeds, images of b), row s of both the model with seed s. Patients are matched across
    the sets by id (module docstring).

    Returns ``n_seeds``, ``delta_auroc`` (mean over seeds), its ``se``, ``delta_auroc_ci``, ``p``, ``df``
    (None: normal), the variance parts ``patient_variance`` (of the seed-mean difference) and
    ``seed_variance`` (s^2 / S), per seed ``per_seed`` (AUROCs, difference, its clustered se, z, p, CI), the
    patient counts (``n_patients_a``, ``n_patients_b``, ``n_patients_shared``) and ``method``."""
    # ids as text: a patient is the same in both sets however its id was read (number or string)
    ids = pd.factorize(
        np.concatenate([np.asarray(patients_a).astype(str), np.asarray(patients_b).astype(str)])
    )[0]
    ids_a, ids_b = ids[: len(patients_a)], ids[len(patients_a) :]
    n_clusters = int(ids.max()) + 1
    a = _set_placements(labels_a, scores_a, ids_a, n_clusters)
    b = _set_placements(labels_b, scores_b, ids_b, n_clusters)
    if a.auroc.shape != b.auroc.shape:
        raise ValueError(f"scores of {a.auroc.size} and {b.auroc.size} seeds: give both sets every seed")
    positive, negative = a.positive - b.positive, a.negative - b.negative  # (seeds, patients)
    has_pos, has_neg = a.has_positive | b.has_positive, a.has_negative | b.has_negative
    deltas = a.auroc - b.auroc
    z_crit = norm.ppf(1.0 - alpha / 2.0)
    per_seed = []
    for s, variance in enumerate(_clustered_variance(positive, negative, has_pos, has_neg)):
        se = float(np.sqrt(max(variance, 0.0)))
        z = deltas[s] / se if se > 0 else 0.0
        per_seed.append(
            {
                "auroc_a": float(a.auroc[s]),
                "auroc_b": float(b.auroc[s]),
                "delta_auroc": float(deltas[s]),
                "se": se,
                "z": float(z),
                "p": float(2.0 * norm.sf(abs(z))),
                "delta_auroc_ci": [float(deltas[s] - z_crit * se), float(deltas[s] + z_crit * se)],
            }
        )
    n_seeds = deltas.size
    delta = float(deltas.mean())
    patient_variance = float(
        max(_clustered_variance(positive.mean(axis=0), negative.mean(axis=0), has_pos, has_neg), 0.0)
    )
    seed_variance = float(deltas.var(ddof=1) / n_seeds) if n_seeds > 1 else 0.0
    se = float(np.sqrt(patient_variance + seed_variance))
    df = n_seeds - 1 if n_seeds > 1 else None
    critical = student_t.ppf(1.0 - alpha / 2.0, df) if df else z_crit
    statistic = delta / se if se > 0 else 0.0
    p = float(2.0 * (student_t.sf(abs(statistic), df) if df else norm.sf(abs(statistic))))
    shared = np.intersect1d(ids_a, ids_b).size
    level = f"{100 * (1 - alpha):g}%"
    if df:
        method = (
            f"AUROC on set a - on set b for the same models, mean over {n_seeds} seeds; SE^2 = s^2(per-seed "
            f"differences)/{n_seeds} + the patient variance of the mean difference (placement values of both "
            f"sets summed per patient, {shared} patients in both sets; Obuchowski's clustered variance); "
            f"{level} CI and p from t with {df} df"
        )
    else:
        method = (
            f"AUROC on set a - on set b for one model: DeLong placement values of both sets summed per "
            f"patient ({shared} patients in both sets), Obuchowski's clustered variance; {level} normal CI"
        )
    return {
        "n_seeds": int(n_seeds),
        "delta_auroc": delta,
        "se": se,
        "delta_auroc_ci": [float(delta - critical * se), float(delta + critical * se)],
        "p": p,
        "df": df,
        "patient_variance": patient_variance,
        "seed_variance": seed_variance,
        "per_seed": per_seed,
        "n_patients_a": int(np.unique(ids_a).size),
        "n_patients_b": int(np.unique(ids_b).size),
        "n_patients_shared": int(shared),
        "method": method,
    }
