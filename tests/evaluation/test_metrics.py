import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrsyn.evaluation.metrics import binary_metrics


@pytest.mark.parametrize("n", [2, 7, 100, 5000])
@pytest.mark.parametrize("ties", [False, True])
def test_agrees_with_scikit_learn(n, ties):
    rng = np.random.default_rng(n)
    for _ in range(10):
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = rng.random(n)
        if ties:
            scores = np.round(scores, 1)
        result = binary_metrics(labels, scores)
        assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
        assert result["aupr"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
        assert (result["n"], result["n_pos"], result["n_neg"]) == (n, labels.sum(), n - labels.sum())


def test_known_values():
    result = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert result["auroc"] == 0.75
    assert result["aupr"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_single_class_gives_no_auroc():
    result = binary_metrics(np.ones(5, int), np.linspace(0, 1, 5))
    assert result["auroc"] is None and result["aupr"] is None and result["n_pos"] == 5
