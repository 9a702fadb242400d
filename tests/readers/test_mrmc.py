"""The MRMC analysis against the published OR-DBM MRMC 2.51 output for the Van Dyke et al. (1993) data
(tests/readers/data/README.md), and the jackknife against leaving each case out by brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrsyn.readers.mrmc import accuracy_jackknife, auroc_jackknife, obuchowski_rockette

DATA = Path(__file__).parent / "data" / "van_dyke_1993.csv"


@pytest.fixture(scope="module")
def van_dyke() -> dict:
    table = pd.read_csv(DATA)
    ratings = table.pivot_table(index=["treatment", "reader"], columns="case", values="rating")
    truth = table.groupby("case")["truth"].first().loc[ratings.columns].to_numpy()
    scores = ratings.to_numpy().reshape(2, 5, -1)
    foms, left_out = zip(*(auroc_jackknife(scores[t], truth) for t in range(2)), strict=True)
    return {"scores": scores, "truth": truth, "foms": np.array(foms), "left_out": np.array(left_out)}


def test_reader_aurocs_equal_the_published_ones(van_dyke):
    published = [
        [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066],
        [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169],
    ]
    np.testing.assert_allclose(van_dyke["foms"], published, atol=5e-9)


def test_or_hillis_two_modality_test_equals_the_published_analysis(van_dyke):
    result = obuchowski_rockette(van_dyke["foms"], van_dyke["left_out"])
    for key, value in {
        "var_error": 0.00080229,
        "cov1": 0.00034661,
        "cov2": 0.00034407,
        "cov3": 0.00023903,
    }.items():
        assert result[key] == pytest.approx(value, abs=5e-9)
    comparison = result["comparison"]
    assert comparison["ms_t"] == pytest.approx(0.00479617, abs=5e-9)
    assert comparison["ms_tr"] == pytest.approx(0.00055103, abs=5e-9)
    assert comparison["error_term"] == pytest.approx(0.00107626, abs=5e-9)
    assert comparison["f"] == pytest.approx(4.46, abs=0.005)
    assert comparison["ddf"] == pytest.approx(15.26, abs=0.005)
    assert comparison["p_value"] == pytest.approx(0.0517, abs=5e-5)
    difference = comparison["differences"]["0-1"]
    assert difference["se"] == pytest.approx(0.02075, abs=5e-6)
    np.testing.assert_allclose(difference["ci"], [-0.08796, 0.00036], atol=5e-6)


@pytest.mark.parametrize(
    ("modality", "published"),
    [
        (
            0,
            {
                "fom": 0.89703704,
                "se": 0.03317360,
                "ddf": 12.74,
                "ci": [0.82522360, 0.96885048],
                "cov2": 0.00048396,
            },
        ),
        (
            1,
            {
                "fom": 0.94083736,
                "se": 0.02156637,
                "ddf": 12.71,
                "ci": [0.89413783, 0.98753689],
                "cov2": 0.00020419,
            },
        ),
    ],
)
def test_single_modality_interval_equals_the_published_one(van_dyke, modality, published):
    """One modality alone (VanDyke1T.txt for the first): the reader-averaged AUROC's CI with ddf_H_single."""
    result = obuchowski_rockette(van_dyke["foms"][modality], van_dyke["left_out"][modality])
    single = result["single"]["0"]
    assert single["fom"] == pytest.approx(published["fom"], abs=5e-9)
    assert single["se"] == pytest.approx(published["se"], abs=5e-9)
    assert single["ddf"] == pytest.approx(published["ddf"], abs=0.005)
    assert single["cov2"] == pytest.approx(published["cov2"], abs=5e-9)
    np.testing.assert_allclose(single["ci"], published["ci"], atol=5e-9)
    fixed = {0: [0.84943008, 0.94464399], 1: [0.90795637, 0.97371835]}[modality]
    np.testing.assert_allclose(single["readers_fixed"]["ci"], fixed, atol=5e-9)


def test_jackknife_values_equal_recomputing_without_each_case(van_dyke):
    scores, truth = van_dyke["scores"][0][:2], van_dyke["truth"]
    auc, left_out = auroc_jackknife(scores, truth)
    np.testing.assert_allclose(auc, [roc_auc_score(truth, row) for row in scores])
    for case in (0, 1, 50, 113):
        keep = np.arange(len(truth)) != case
        np.testing.assert_allclose(
            left_out[:, case], [roc_auc_score(truth[keep], row[keep]) for row in scores]
        )
    correct = scores > 3
    accuracy, dropped = accuracy_jackknife(correct)
    np.testing.assert_allclose(dropped[:, 7], np.delete(correct, 7, axis=1).mean(axis=1))
    np.testing.assert_allclose(accuracy, correct.mean(axis=1))
