"""Uncertainty and comparisons for binary classifiers: bootstrap CIs, DeLong's test, paired bootstrap.

Methods (so a paper can cite them):

- **CIs** of AUROC and AUPR: stratified percentile bootstrap. Each resample draws the positives with
  replacement from the positives and the negatives from the negatives (class counts stay fixed, so every
  resample has both classes), recomputes the metric, and the CI is the (alpha/2, 1 - alpha/2) percentiles
  over ``n_resamples`` resamples (default 2000). Seeded: the same seed gives the same interval.
- **DeLong's test** for the difference of two correlated AUROCs on the same samples (DeLong, DeLong and
  Clarke-Pearson 1988), with the fast mid-rank algorithm of Sun and Xu (2014): the AUROC difference, its
  standard error, z, the two-sided p value and a normal 95% CI.
- **Paired bootstrap** of the AUROC and AUPR differences: the same stratified resamples applied to both
  models' scores, percentile CI of the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from cxrsyn.evaluation.metrics import auroc, average_precision

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"auroc": auroc, "aupr": average_precision}


def stratified_resamples(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``n_resamples`` x n index array; positives drawn from positives, negatives from negatives."""
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
    draws = [
        rng.choice(positives, size=(n_resamples, positives.size), replace=True),
        rng.choice(negatives, size=(n_resamples, negatives.size), replace=True),
    ]
    return np.concatenate(draws, axis=1)


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, list[float]]:
    """``{"auroc_ci": [lo, hi], "aupr_ci": [lo, hi]}`` by the stratified percentile bootstrap."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    samples = stratified_resamples(labels, n_resamples, seed)
    result = {}
    for name, metric in METRICS.items():
        values = np.array([metric(labels[rows], scores[rows]) for rows in samples])
        result[f"{name}_ci"] = _percentiles(values, alpha)
    return result


def paired_bootstrap(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Differences a - b of AUROC and AUPR with percentile CIs from the same resamples for both models."""
    labels = np.asarray(labels)
    scores_a, scores_b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    samples = stratified_resamples(labels, n_resamples, seed)
    result: dict[str, Any] = {}
    for name, metric in METRICS.items():
        diffs = np.array([metric(labels[r], scores_a[r]) - metric(labels[r], scores_b[r]) for r in samples])
        result[f"{name}_diff"] = metric(labels, scores_a) - metric(labels, scores_b)
        result[f"{name}_diff_ci"] = _percentiles(diffs, alpha)
        result[f"{name}_diff_se"] = float(diffs.std(ddof=1))
    return result


def delong(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, alpha: float = 0.05
) -> dict[str, float]:
    """DeLong's test of AUROC(a) = AUROC(b) on the same samples."""
    labels = np.asarray(labels).astype(bool)
    positives = np.stack([np.asarray(scores_a, np.float64)[labels], np.asarray(scores_b, np.float64)[labels]])
    negatives = np.stack(
        [np.asarray(scores_a, np.float64)[~labels], np.asarray(scores_b, np.float64)[~labels]]
    )
    aucs, v10, v01 = _structural_components(positives, negatives)
    covariance = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ covariance @ contrast)
    diff = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(variance, 0.0)))
    z = diff / se if se > 0 else (0.0 if diff == 0 else np.inf * np.sign(diff))
    p_value = float(2.0 * norm.sf(abs(z)))
    half = norm.ppf(1.0 - alpha / 2.0) * se
    return {
        "auroc_a": float(aucs[0]),
        "auroc_b": float(aucs[1]),
        "auroc_diff": diff,
        "se": se,
        "z": float(z),
        "p_value": p_value,
        "auroc_diff_ci": [diff - half, diff + half],
    }


def _structural_components(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sun and Xu's mid-rank formulation: AUCs and the per-sample placement values V10, V01."""
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
