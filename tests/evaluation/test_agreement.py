"""Agreement statistics against independent references (scikit-learn, statsmodels, scipy, textbook formulas)
and their intervals and tests by seeded simulation with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from cxrsyn.evaluation.agreement import (
    agreement,
    agreement_below,
    cohen_kappa,
    confusion_table,
    holm,
    proportion_ci,
)

CATEGORIES = ["18-39", "40-64", "65-90"]


def _ratings(rng: np.random.Generator, n: int, accuracy: float, k: int = 3) -> tuple[list[str], list[str]]:
    asked = rng.integers(0, k, n)
    read = np.where(rng.random(n) < accuracy, asked, rng.integers(0, k, n))
    return [CATEGORIES[i] for i in asked], [CATEGORIES[i] for i in read]


def test_confusion_and_kappa_match_scikit_learn_and_statsmodels():
    asked, read = _ratings(np.random.default_rng(0), 200, 0.6)
    table = confusion_table(asked, read, CATEGORIES)
    assert (table.to_numpy() == confusion_matrix(asked, read, labels=CATEGORIES)).all()
    mine = cohen_kappa(table.to_numpy())
    assert mine["kappa"] == pytest.approx(cohen_kappa_score(asked, read), abs=1e-12)
    theirs = cohens_kappa(table.to_numpy())
    assert mine["kappa_se"] == pytest.approx(theirs.std_kappa, rel=1e-10)
    assert mine["kappa_ci"] == pytest.approx([theirs.kappa_low, theirs.kappa_upp], rel=1e-10)


def test_agreement_ci_is_wilsons_textbook_interval_and_cells_are_clopper_pearson():
    for successes, n in ((37, 50), (0, 12), (12, 12), (150, 300)):
        z = norm.ppf(0.975)
        p = successes / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        assert proportion_ci(successes, n, 0.05, "wilson") == pytest.approx(
            [centre - half, centre + half], abs=1e-9
        )
        exact = proportion_confint(successes, n, alpha=0.05, method="beta")
        assert proportion_ci(successes, n, 0.05, "exact") == pytest.approx(list(exact), abs=1e-9)
    result = agreement(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert result["agreement"] == 0.75 and result["confusion"]["rows_asked_columns_read"] == [[1, 1], [0, 2]]


def test_one_sided_binomial_p_and_holm_match_their_references():
    assert agreement_below(9, 40, 0.5) == pytest.approx(binom.cdf(9, 40, 0.5), rel=1e-12)
    p = np.random.default_rng(1).random(12) ** 3
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-12)
    assert holm([]) == []


def test_kappa_ci_covers_the_true_kappa_about_95_percent_of_the_time():
    """Two raters who agree by chance only through accuracy a (reading the truth with probability a, else a
    uniform category): the population kappa is a exactly (k categories, uniform truth)."""
    rng = np.random.default_rng(2)
    accuracy, n, repeats = 0.6, 300, 600
    covered = 0
    for _ in range(repeats):
        asked, read = _ratings(rng, n, accuracy)
        low, high = cohen_kappa(confusion_table(asked, read, CATEGORIES).to_numpy())["kappa_ci"]
        covered += low <= accuracy <= high
    assert 0.92 <= covered / repeats <= 0.98


def test_wilson_ci_covers_the_true_agreement_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    truth, n, repeats = 0.8, 80, 2000
    hits = rng.binomial(n, truth, repeats)
    covered = np.mean([low <= truth <= high for low, high in (proportion_ci(h, n) for h in hits)])
    assert 0.93 <= covered <= 0.97


def test_flag_rule_keeps_the_family_wise_error_rate_at_the_boundary():
    """Ten cells whose true agreement is exactly the threshold (the worst case of H0): Holm-adjusted exact
    tests flag any of them in at most alpha of the audits; cells at 0.2 are flagged almost always."""
    rng = np.random.default_rng(4)
    threshold, alpha, repeats, n = 0.5, 0.05, 1000, 40
    false_audits = 0
    for _ in range(repeats):
        p = [agreement_below(int(k), n, threshold) for k in rng.binomial(n, threshold, 10)]
        false_audits += min(holm(p)) < alpha
    assert false_audits / repeats <= alpha
    power = np.mean(
        [
            min(holm([agreement_below(int(k), n, threshold) for k in rng.binomial(n, 0.2, 10)])) < alpha
            for _ in range(200)
        ]
    )
    assert power > 0.95
