import numpy as np
import pandas as pd
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


def test_subgroups_score_label_specific_values_against_all_negatives():
    from cxrsyn.evaluation.outputs import subgroup_metrics

    rng = np.random.default_rng(3)
    subtype = np.array(["normal"] * 40 + ["bacteria"] * 30 + ["virus"] * 20 + ["unknown"] * 5)
    labels = (subtype != "normal").astype(int)
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(95)], "label": labels, "prob": rng.random(95)})
    table["subtype"] = subtype
    table["split"] = np.where(np.arange(95) % 2, "train", "test")
    result = subgroup_metrics(table, ["subtype", "split", "absent_column"], None, min_per_class=10)
    assert set(result) == {"subtype", "split"}
    assert set(result["subtype"]) == {"bacteria", "virus", "unknown", "normal"}
    assert result["subtype"]["normal"] == {
        "n": 40,
        "n_pos": 0,
        "n_neg": 40,
        "auroc": None,
        "aupr": None,
        "too_small": True,
    }  # the negative class itself: counted, not scored
    bacteria = result["subtype"]["bacteria"]
    member = np.isin(subtype, ["bacteria", "normal"])
    assert bacteria["vs"] == "all negatives" and (bacteria["n_pos"], bacteria["n_neg"]) == (30, 40)
    assert bacteria["auroc"] == pytest.approx(roc_auc_score(labels[member], table["prob"][member]), abs=1e-12)
    assert result["subtype"]["unknown"] == {
        "vs": "all negatives",
        "n": 45,
        "n_pos": 5,
        "n_neg": 40,
        "auroc": None,
        "aupr": None,
        "too_small": True,
    }
    train = table["split"] == "train"
    assert result["split"]["train"]["auroc"] == pytest.approx(
        roc_auc_score(labels[train], table["prob"][train]), abs=1e-12
    )


def test_rsna_age_bands():
    from cxrsyn.data.rsna import age_band

    assert [age_band(a) for a in (0, 17, 18, 39, 40, 64, 65, 120)] == [
        "0-17",
        "0-17",
        "18-39",
        "18-39",
        "40-64",
        "40-64",
        "65+",
        "65+",
    ]
