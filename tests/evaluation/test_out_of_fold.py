"""The out-of-fold AUROC and its interval (``out_of_fold_auroc``), against scikit-learn and the bootstrap it
widens; its coverage under no signal is simulated in tests/auditing/test_realism.py, where the folds are."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrsyn.evaluation.statistics import CROSS_FIT_WIDENING, bootstrap_ci, out_of_fold_auroc


def test_out_of_fold_auroc_is_scikit_learns_and_widens_the_clustered_bootstrap_by_sqrt_2():
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(40), np.zeros(50)].astype(int)
    scores = rng.normal(size=90) + 0.8 * labels
    groups = np.r_[np.repeat(np.arange(20), 2), 100 + np.arange(50)]
    result = out_of_fold_auroc(labels, scores, groups, n_resamples=500, seed=4)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    low, high = bootstrap_ci(labels, scores, 500, 4, 0.05, patients=groups)["auroc_ci"]
    point = result["auroc"]
    assert np.isclose(CROSS_FIT_WIDENING, np.sqrt(2))
    assert result["auroc_ci"] == pytest.approx(
        [point - np.sqrt(2) * (point - low), point + np.sqrt(2) * (high - point)]
    )
    assert "sqrt(2)" in result["method"] and "group-clustered" in result["method"]


def test_out_of_fold_interval_stays_inside_0_and_1():
    labels = np.r_[np.ones(30), np.zeros(30)].astype(int)
    result = out_of_fold_auroc(labels, labels + 0.01 * np.arange(60), n_resamples=200)
    assert result["auroc"] == 1.0 and result["auroc_ci"] == [1.0, 1.0]
    assert "one image per group" in result["method"]
