"""CIs, DeLong and the paired bootstrap against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrsyn.evaluation.metrics import auroc, average_precision
from cxrsyn.evaluation.statistics import bootstrap_ci, delong, paired_bootstrap, stratified_resamples


def correlated_scores(n: int, seed: int, gap: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    shared = rng.normal(size=n)
    a = labels * 1.0 + shared + rng.normal(scale=0.8, size=n)
    b = labels * (1.0 - gap) + shared + rng.normal(scale=0.8, size=n)
    return labels.astype(int), a, b


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_ap_match_scikit_learn_to_1e_9(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500), 2)  # many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-9
    )


def test_resamples_keep_class_counts():
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    samples = stratified_resamples(labels, 50, seed=1)
    assert samples.shape == (50, 7) and (labels[samples].sum(axis=1) == 2).all()


def test_bootstrap_ci_is_reproducible_and_contains_the_estimate():
    labels, scores, _ = correlated_scores(400, seed=2)
    first = bootstrap_ci(labels, scores, n_resamples=500, seed=7)
    assert first == bootstrap_ci(labels, scores, n_resamples=500, seed=7)
    assert first != bootstrap_ci(labels, scores, n_resamples=500, seed=8)
    low, high = first["auroc_ci"]
    assert low < auroc(labels, scores) < high and high - low < 0.2
    low, high = first["aupr_ci"]
    assert low < average_precision(labels, scores) < high


def test_delong_agrees_with_the_paired_bootstrap_on_large_samples():
    """On 4,000 samples the DeLong standard error and the bootstrap SD of the AUROC difference agree within
    10%, and the AUROC difference is the same number."""
    labels, a, b = correlated_scores(4000, seed=3, gap=0.15)
    test = delong(labels, a, b)
    boot = paired_bootstrap(labels, a, b, n_resamples=400, seed=0)
    assert test["auroc_a"] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert test["auroc_diff"] == pytest.approx(boot["auroc_diff"], abs=1e-12)
    assert test["se"] == pytest.approx(boot["auroc_diff_se"], rel=0.10)
    assert test["p_value"] < 0.05 and boot["auroc_diff_ci"][0] > 0


def test_delong_finds_no_difference_between_identical_models():
    labels, a, _ = correlated_scores(300, seed=4)
    test = delong(labels, a, a.copy())
    assert test["auroc_diff"] == 0.0 and test["p_value"] == 1.0


def test_thresholds_and_calibration_against_scikit_learn():
    from sklearn.metrics import brier_score_loss, confusion_matrix, f1_score, roc_curve

    from cxrsyn.evaluation.metrics import calibration, threshold_metrics, youden_threshold

    labels, scores, _ = correlated_scores(600, seed=5)
    probs = 1.0 / (1.0 + np.exp(-scores))
    fpr, tpr, thresholds = roc_curve(labels, probs)
    best = thresholds[np.argmax(tpr - fpr)]
    assert youden_threshold(labels, probs) == pytest.approx(best)
    result = threshold_metrics(labels, probs, 0.5)
    tn, fp, fn, tp = confusion_matrix(labels, probs >= 0.5).ravel()
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (tp, fp, fn, tn)
    assert result["sensitivity"] == pytest.approx(tp / (tp + fn)) and result["npv"] == pytest.approx(
        tn / (tn + fn)
    )
    assert result["f1"] == pytest.approx(f1_score(labels, probs >= 0.5))
    cal = calibration(labels, probs)
    assert cal["brier"] == pytest.approx(brier_score_loss(labels, probs))
    assert calibration(np.array([0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0]))["ece"] == 0.0
