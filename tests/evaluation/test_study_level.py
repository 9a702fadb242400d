"""The study-level comparison (``study_difference``, what the report calls) against a known truth: simulated
studies at the level of predictions (cxrsyn/testing/study_simulation.py), three seeds, in regimes where
training seeds, test patients or both dominate. The fuller grid (2 to 10 seeds, the previous method beside)
is benchmarks/study_level_error_rates.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as t_dist
from scipy.stats import ttest_1samp
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrsyn.evaluation.statistics import (
    Clusters,
    paired_bootstrap,
    resample_weights,
    study_difference,
    study_mean,
)
from cxrsyn.testing.study_simulation import REGIMES, error_rates, simulate_scores

N_STUDIES = 250  # per regime and hypothesis: Monte Carlo se of a 0.05 rate is 0.014
N_SEEDS = 3  # the demo's, and the fewest a real study should be read with
TESTED = [regime for regime in REGIMES if regime.name in ("seed-dominated", "patient-dominated", "mixed")]


def report_method(labels, scores_a, scores_b, study):
    # few patient resamples per study: the bootstrap only supplies the patient variance (an average), not
    # the tails of the interval
    return study_difference(labels, scores_a, scores_b, n_resamples=100, seed=study)


@pytest.mark.parametrize("regime", TESTED, ids=lambda regime: regime.name)
def test_study_level_false_positive_rate_is_at_most_alpha_and_coverage_at_least_093(regime):
    null = error_rates(report_method, regime, N_SEEDS, N_STUDIES, seed=0)
    assert null["truth"] == 0.0
    assert null["miss_rate"] <= 0.05 + 2 * null["mc_se"], null  # identical recipes: CI excludes 0
    shifted = error_rates(report_method, regime.with_gap(0.3), N_SEEDS, N_STUDIES, seed=0)
    assert shifted["truth"] > 0.035
    assert shifted["coverage"] >= 0.93, shifted  # a known difference: CI covers it


def test_study_difference_is_students_t_on_the_per_seed_differences_when_seeds_dominate():
    """A test set so large that its sampling noise is negligible beside the seeds' scatter: the interval
    and p are scipy's one-sample t test on the per-seed AUROC differences (an independent reference)."""
    rng = np.random.default_rng(3)
    n, seeds = 20000, 4
    labels = (rng.random(n) < 0.5).astype(int)
    shared = rng.normal(size=n)
    gaps = np.array([0.15, -0.05, 0.3, 0.1])[:, None]  # per-seed luck of arm a
    a = labels * (1.0 + gaps) + shared + rng.normal(scale=0.05, size=(seeds, n))
    b = labels * 1.0 + shared + rng.normal(scale=0.05, size=(seeds, n))
    ours = study_difference(labels, a, b, n_resamples=200, seed=0)
    per_seed = [roc_auc_score(labels, a[s]) - roc_auc_score(labels, b[s]) for s in range(seeds)]
    reference = ttest_1samp(per_seed, 0.0)
    assert ours["per_seed_delta_auroc"] == pytest.approx(per_seed, abs=1e-12)
    assert ours["delta_auroc_ci"] == pytest.approx(list(reference.confidence_interval(0.95)), rel=0.02)
    assert ours["p_auroc"] == pytest.approx(reference.pvalue, rel=0.05)
    assert ours["df"] == seeds - 1 and ours["variance_patients_auroc"] < 0.02 * ours["variance_seed_auroc"]


def test_study_difference_variance_components_by_hand():
    """se^2 = s^2 / S + c with c the mean between-seed covariance of the bootstrap differences, recomputed
    from scikit-learn on explicitly resampled image lists; the two components add up to se^2."""
    rng = np.random.default_rng(12)
    n, seeds, resamples = 60, 3, 150
    labels = (rng.random(n) < 0.5).astype(int)
    patients = rng.integers(0, 25, n)
    a = labels[None] * 0.8 + rng.normal(size=(seeds, n))
    b = labels[None] * 0.5 + rng.normal(size=(seeds, n))
    ours = study_difference(labels, a, b, n_resamples=resamples, seed=2, patients=patients)
    weights = np.concatenate(list(resample_weights(Clusters.of(labels, patients), resamples, seed=2)))
    for name, metric in (("auroc", roc_auc_score), ("aupr", average_precision_score)):
        per_seed = np.array([metric(labels, a[s]) - metric(labels, b[s]) for s in range(seeds)])
        replicates = np.zeros((seeds, resamples))
        for r in range(resamples):
            listed = np.repeat(np.arange(n), weights[r].astype(int))
            for s in range(seeds):
                replicates[s, r] = metric(labels[listed], a[s][listed]) - metric(labels[listed], b[s][listed])
        centred = replicates - replicates.mean(axis=1, keepdims=True)
        pairs = [(s, u) for s in range(seeds) for u in range(seeds) if s != u]
        shared = max(0.0, np.mean([centred[s] @ centred[u] / (resamples - 1) for s, u in pairs]))
        se = np.sqrt(per_seed.var(ddof=1) / seeds + shared)
        half = t_dist.ppf(0.975, seeds - 1) * se
        assert ours[f"delta_{name}"] == pytest.approx(per_seed.mean(), abs=1e-12)
        assert ours[f"se_{name}"] == pytest.approx(se, rel=1e-9)
        assert ours[f"variance_seed_{name}"] + ours[f"variance_patients_{name}"] == pytest.approx(se**2)
        assert ours[f"delta_{name}_ci"] == pytest.approx([per_seed.mean() - half, per_seed.mean() + half])
        p = 2 * t_dist.sf(abs(per_seed.mean()) / se, seeds - 1)
        assert ours[f"p_{name}"] == pytest.approx(p, rel=1e-9)
    assert ours["n_seeds"] == seeds and "Student's t with 2 df" in ours["method"]


def test_study_difference_counts_seed_variance():
    """Arms that differ only by training noise: each seed's difference is large, in both directions. One
    seed's paired bootstrap calls it significant; the study-level CI over seeds contains 0."""
    rng = np.random.default_rng(5)
    n = 3000
    labels = (rng.random(n) < 0.5).astype(int)
    signal = labels + rng.normal(size=n)
    shifts = [0.25, -0.25, 0.2, -0.2, 0.25, -0.25]  # per-seed luck of arm a against arm b
    a = np.stack([signal + shift * labels + rng.normal(scale=0.3, size=n) for shift in shifts])
    b = np.stack([signal + rng.normal(scale=0.3, size=n) for _ in shifts])
    assert paired_bootstrap(labels, a[0], b[0], 400, 0)["auroc_diff_ci"][0] > 0
    study = study_difference(labels, a, b, 400, 0)
    low, high = study["delta_auroc_ci"]
    assert low < study["delta_auroc"] < high and low < 0 < high and study["p_auroc"] > 0.05
    assert study["variance_seed_auroc"] > 10 * study["variance_patients_auroc"]


def test_one_seed_gives_no_verdict_only_the_interval_conditional_on_its_models():
    rng = np.random.default_rng(13)
    labels, a, b = simulate_scores(REGIMES[0].with_gap(0.5), 1, rng)
    study = study_difference(labels, a, b, 300, 4)
    paired = paired_bootstrap(labels, a[0], b[0], 300, 4)
    assert study["delta_auroc_ci"] is None and study["p_auroc"] is None and study["df"] is None
    assert study["conditional_auroc_ci"] == pytest.approx(paired["auroc_diff_ci"], abs=1e-12)
    assert study["conditional_aupr_ci"] == pytest.approx(paired["aupr_diff_ci"], abs=1e-12)
    assert study["method"].startswith("1 seed: no seed variance is estimable")
    assert "this one trained model per arm" in study["method"]


def test_study_mean_of_one_arm_is_the_t_interval_when_seeds_dominate():
    rng = np.random.default_rng(8)
    n = 20000
    labels = (rng.random(n) < 0.5).astype(int)
    scores = labels * np.array([0.8, 1.2, 1.0])[:, None] + rng.normal(size=n)
    ours = study_mean(labels, scores, n_resamples=200, seed=0)
    per_seed = [roc_auc_score(labels, row) for row in scores]
    assert ours["auroc"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert ours["auroc_ci"] == pytest.approx(list(ttest_1samp(per_seed, 0).confidence_interval()), rel=0.01)
    one = study_mean(labels, scores[:1], n_resamples=100, seed=0)
    assert (
        one["auroc_ci"] is None
        and one["conditional_auroc_ci"][0] < one["auroc"] < one["conditional_auroc_ci"][1]
    )
