"""Binary classification metrics (positive class = pneumonia).

The numbers a run reports (metrics.json) are computed here in float64 and match scikit-learn's
``roc_auc_score`` and ``average_precision_score`` to rounding error. The training loop logs torchmetrics'
AUROC and average precision (float32) for monitoring and checkpoint selection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic with mid-ranks for ties, which equals the
    trapezoidal area under the empirical ROC curve."""
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    ranks = rankdata(np.asarray(scores, dtype=np.float64), method="average")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _counts_at_thresholds(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives when predicting positive at >= each distinct score, highest first."""
    labels = np.asarray(labels).astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    # the last position of each run of equal scores is where a threshold takes effect
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_pos = np.cumsum(labels)[last_of_run]
    return true_pos, last_of_run + 1.0 - true_pos


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum over distinct thresholds of (recall step) x precision, without interpolation."""
    precision, recall = pr_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    true_pos, false_pos = _counts_at_thresholds(labels, scores)
    return np.r_[0.0, false_pos / false_pos[-1]], np.r_[0.0, true_pos / true_pos[-1]]


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, highest threshold first (no (0, 1) point added)."""
    true_pos, false_pos = _counts_at_thresholds(labels, scores)
    return true_pos / (true_pos + false_pos), true_pos / true_pos[-1]


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """``n``, ``n_pos``, ``n_neg``, ``auroc`` and ``aupr`` (average precision); AUROC and AUPR are
    ``None`` when a class is absent, since neither is defined then."""
    labels = np.asarray(labels).astype(np.int64)
    n_pos = int(labels.sum())
    result: dict[str, Any] = {"n": int(labels.size), "n_pos": n_pos, "n_neg": int(labels.size) - n_pos}
    if n_pos == 0 or n_pos == labels.size:
        result.update(auroc=None, aupr=None)
    else:
        result.update(auroc=auroc(labels, probs), aupr=average_precision(labels, probs))
    return result


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 (predict positive at >= it).

    J is a step function of the threshold: it is constant between neighbouring distinct scores. The set of
    thresholds that maximise it is an interval (lowest distinct score below the maximising run, highest
    score of the run]; this returns the interval's midpoint, not its edge, so a model whose validation
    scores separate the classes perfectly gets the threshold half way between the highest negative and the
    lowest positive score. Ties between several maximising runs: the lowest run."""
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    candidates = np.unique(probs)
    j = _youden_j(labels, probs, candidates)
    best = np.flatnonzero(j == j.max())
    first = int(best[0])
    last = first
    while last + 1 < len(candidates) and j[last + 1] == j[first]:
        last += 1
    if first == 0:  # nothing below: the run's lower end is open-ended; keep its lowest score
        return float(candidates[0])
    return float((candidates[first - 1] + candidates[last]) / 2.0)


def _youden_j(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    positives, negatives = labels.sum(), (~labels).sum()
    pos_sorted, neg_sorted = np.sort(probs[labels]), np.sort(probs[~labels])
    # counts at or above each threshold, by binary search
    tp = positives - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = negatives - np.searchsorted(neg_sorted, thresholds, side="left")
    return tp / positives - fp / negatives


def sensitivity_at_specificity(labels: np.ndarray, probs: np.ndarray, specificity: float) -> dict[str, Any]:
    """The highest sensitivity among thresholds whose specificity is at least ``specificity`` (predict
    positive at >= threshold), with that threshold (the highest score giving it) and the specificity
    reached. Chosen on the data it is reported on."""
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.r_[np.unique(probs), np.inf]  # inf: predict nothing positive (specificity 1)
    positives, negatives = labels.sum(), (~labels).sum()
    tp = positives - np.searchsorted(np.sort(probs[labels]), thresholds, side="left")
    tn = np.searchsorted(np.sort(probs[~labels]), thresholds, side="left")
    ok = tn / negatives >= specificity - 1e-12
    sensitivity = np.where(ok, tp / positives, -1.0)
    best = int(np.flatnonzero(sensitivity == sensitivity.max())[-1])
    return {
        "target_specificity": float(specificity),
        "sensitivity": float(tp[best] / positives),
        "specificity": float(tn[best] / negatives),
        "threshold": float(thresholds[best]) if np.isfinite(thresholds[best]) else None,
    }


def threshold_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV, NPV and F1 when predicting pneumonia at ``prob >= threshold``."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(probs, dtype=np.float64) >= threshold
    tp, fp = int((predicted & labels).sum()), int((predicted & ~labels).sum())
    fn, tn = int((~predicted & labels).sum()), int((~predicted & ~labels).sum())

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "threshold": float(threshold),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Brier score and expected calibration error over ``bins`` equal-width probability bins."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(probs[members].mean() - labels[members].mean())
    return {"brier": float(np.mean((probs - labels) ** 2)), "ece": float(ece), "ece_bins": bins}
