"""The label audit's yardstick: the same auditor on a real reference set, against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrsyn.auditing.labels import LabelAuditSettings, label_audit, reference_label_audit, reference_sample
from cxrsyn.evaluation.statistics import bootstrap_ci

SETTINGS = LabelAuditSettings(
    classes=["Pneumonia", "Lung Opacity"], score_class="Pneumonia", n_show=4, n_resamples=200, n_list=5
)


def test_reference_label_audit_is_auroc_and_contradiction_rate_against_the_real_labels():
    rng = np.random.default_rng(4)
    n = 300
    labels = (rng.random(n) < 0.4).astype(int)
    patients = rng.integers(0, 120, n)  # several images per patient, as in Kermany
    scores = pd.DataFrame(
        {
            "Pneumonia": 1 / (1 + np.exp(-(1.5 * labels - 0.7 + rng.normal(size=n)))),
            "Lung Opacity": rng.random(n),
        }
    )
    result = reference_label_audit(labels, scores, SETTINGS, seed=3, patients=patients)
    pneumonia = result["auroc_vs_labels"]["Pneumonia"]
    assert pneumonia["auroc"] == pytest.approx(roc_auc_score(labels, scores["Pneumonia"]), abs=1e-12)
    expected_ci = bootstrap_ci(labels, scores["Pneumonia"].to_numpy(), 200, 3, patients=patients)
    assert pneumonia["auroc_ci"] == expected_ci["auroc_ci"] and "patient-clustered" in pneumonia["ci_method"]
    by_hand = sum(
        (p > 0.5) if y == 0 else (1 - p > 0.5) for y, p in zip(labels, scores["Pneumonia"], strict=True)
    )
    assert result["n_contradicting"] == by_hand and result["contradiction_rate"] == pytest.approx(by_hand / n)
    assert result["n"] == n and result["n_pos"] == labels.sum() and result["n_patients"] == len(set(patients))
    # the audited set's numbers use the same rule: equal scores and labels give the same rate
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": labels})
    audited, _ = label_audit(table, scores, SETTINGS, seed=3)
    assert audited["contradiction_rate"] == pytest.approx(result["contradiction_rate"])


def test_reference_sample_is_seeded_sorted_and_all_rows_when_small():
    rows = reference_sample(5000, 1000, seed=0)
    assert len(rows) == 1000 and len(set(rows)) == 1000 and (np.diff(rows) > 0).all()
    assert (rows == reference_sample(5000, 1000, seed=0)).all()
    assert set(rows) != set(reference_sample(5000, 1000, seed=1))
    assert (reference_sample(300, 1000, seed=0) == np.arange(300)).all()
    assert (reference_sample(300, None, seed=0) == np.arange(300)).all()
