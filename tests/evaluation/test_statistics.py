"""CIs, DeLong, the paired bootstrap, Holm, thresholds and calibration, each against an
independent reference: scikit-learn on explicitly resampled image lists, slow textbook loops, or values
computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cxrsyn.evaluation.metrics import (
    auroc,
    average_precision,
    calibration,
    sensitivity_at_specificity,
    threshold_metrics,
    youden_threshold,
)
from cxrsyn.evaluation.statistics import (
    CHUNK,
    Clusters,
    WeightedScores,
    auroc_covariance,
    auroc_set_difference,
    bootstrap_ci,
    delong,
    holm,
    paired_bootstrap,
    resample_weights,
)
from cxrsyn.testing.simulations import nested_sets, nested_truth, null_shift


def correlated_scores(n: int, seed: int, gap: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    shared = rng.normal(size=n)
    a = labels * 1.0 + shared + rng.normal(scale=0.8, size=n)
    b = labels * (1.0 - gap) + shared + rng.normal(scale=0.8, size=n)
    return labels.astype(int), a, b


# ------------------------------------------------------------------------------- textbook references
def textbook_resamples(labels: np.ndarray, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Image index lists of the stratified bootstrap with one image per patient, drawn in the documented
    order (per block of CHUNK resamples: every positive draw, then every negative draw)."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    rows = []
    for start in range(0, n_resamples, CHUNK):
        block = min(CHUNK, n_resamples - start)
        pos = rng.choice(positives, size=(block, positives.size))
        neg = rng.choice(negatives, size=(block, negatives.size))
        rows += list(np.concatenate([pos, neg], axis=1))
    return rows


def textbook_percentiles(values: list[float]) -> list[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def textbook_kernel(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """psi(x, y) = 1 if x > y, 1/2 if tied, 0 otherwise: an m x n matrix, by brute force."""
    return (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])


def textbook_obuchowski(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Obuchowski (1997), eqs. for V10, V01, S10, S01, S11 written out with loops over clusters:
    the covariance matrix of the AUROCs of the rows of ``scores``."""
    labels = labels.astype(bool)
    k = scores.shape[0]
    m, n = labels.sum(), (~labels).sum()
    theta, v10, v01 = [], [], []
    for row in scores:
        psi = textbook_kernel(row[labels], row[~labels])
        theta.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    clusters = list(dict.fromkeys(patients))
    pos_patients, neg_patients = patients[labels], patients[~labels]
    i10 = len(set(pos_patients))
    i01 = len(set(neg_patients))
    cov = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10 = s01 = s11 = s11_rev = 0.0
            for c in clusters:
                in_pos, in_neg = pos_patients == c, neg_patients == c
                d10_r = v10[r][in_pos].sum() - in_pos.sum() * theta[r]
                d10_s = v10[s][in_pos].sum() - in_pos.sum() * theta[s]
                d01_r = v01[r][in_neg].sum() - in_neg.sum() * theta[r]
                d01_s = v01[s][in_neg].sum() - in_neg.sum() * theta[s]
                s10 += d10_r * d10_s
                s01 += d01_r * d01_s
                s11 += d10_r * d01_s
                s11_rev += d10_s * d01_r
            s10 *= i10 / ((i10 - 1) * m)
            s01 *= i01 / ((i01 - 1) * n)
            factor = len(clusters) / (len(clusters) - 1)
            cov[r, s] = s10 / m + s01 / n + factor * (s11 + s11_rev) / (m * n)
    return cov


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_ap_match_scikit_learn_to_1e_9(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500), 2)  # many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-9
    )


def test_weighted_metrics_equal_scikit_learn_on_the_resampled_image_list():
    rng = np.random.default_rng(0)
    labels = (rng.random(240) < 0.3).astype(int)
    scores = np.round(rng.random(240) + 0.4 * labels, 1)  # heavy ties
    patients = rng.integers(0, 70, 240)  # clusters of varied size, some holding both classes
    clusters = Clusters.of(labels, patients)
    weights = next(resample_weights(clusters, 20, seed=4))
    values = WeightedScores(labels, scores).metrics(weights)
    for row in range(20):
        listed = np.repeat(np.arange(240), weights[row].astype(int))
        assert values["auroc"][row] == pytest.approx(roc_auc_score(labels[listed], scores[listed]), abs=1e-12)
        assert values["aupr"][row] == pytest.approx(
            average_precision_score(labels[listed], scores[listed]), abs=1e-12
        )


def test_clustered_resamples_draw_whole_patients_within_each_class():
    labels = np.array([1, 1, 0, 0, 0, 1, 0])
    patients = np.array(["a", "a", "b", "b", "c", "d", "d"])  # d has one positive and one negative image
    clusters = Clusters.of(labels, patients)
    assert (clusters.n_pos_units, clusters.n_units) == (2, 5)  # (a,1) (d,1) | (b,0) (c,0) (d,0)
    for weights in resample_weights(clusters, 300, seed=1):
        # an image's weight is its unit's draw count: a patient's images of one class move together
        assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 2] == weights[:, 3]).all()
        # two positive units and three negative units are drawn in every resample
        assert (weights[:, 0] + weights[:, 5] == 2).all()
        assert (weights[:, 2] + weights[:, 4] + weights[:, 6] == 3).all()
    # d's positive and negative images are separate units: drawn independently
    weights = np.concatenate(list(resample_weights(clusters, 300, seed=1)))
    assert (weights[:, 5] != weights[:, 6]).any()


def test_bootstrap_ci_with_one_image_per_patient_is_the_textbook_image_bootstrap():
    labels, scores, _ = correlated_scores(300, seed=2)
    scores = np.round(scores, 1)
    ours = bootstrap_ci(labels, scores, n_resamples=300, seed=7)
    resamples = textbook_resamples(labels, 300, seed=7)
    assert ours["auroc_ci"] == pytest.approx(
        textbook_percentiles([roc_auc_score(labels[r], scores[r]) for r in resamples]), abs=1e-12
    )
    assert ours["aupr_ci"] == pytest.approx(
        textbook_percentiles([average_precision_score(labels[r], scores[r]) for r in resamples]), abs=1e-12
    )
    # passing a patient column with one image each changes nothing
    assert bootstrap_ci(labels, scores, 300, 7, patients=[f"p{i}" for i in range(300)]) == ours
    low, high = ours["auroc_ci"]
    assert low < auroc(labels, scores) < high and high - low < 0.2


def test_exact_copies_of_each_patient_give_the_ci_of_the_patients_alone():
    labels, scores, _ = correlated_scores(200, seed=3)
    copies = 3
    repeated = bootstrap_ci(
        np.repeat(labels, copies),
        np.repeat(scores, copies),
        400,
        5,
        patients=np.repeat(np.arange(200), copies),
    )
    alone = bootstrap_ci(labels, scores, 400, 5)
    assert repeated["auroc_ci"] == pytest.approx(alone["auroc_ci"], abs=1e-12)
    assert repeated["aupr_ci"] == pytest.approx(alone["aupr_ci"], abs=1e-12)
    assert repeated["ci_method"].startswith("patient-clustered stratified percentile bootstrap")


def test_near_copies_widen_the_ci_by_about_sqrt_k_against_the_image_level_one():
    rng = np.random.default_rng(11)
    labels, scores, _ = correlated_scores(400, seed=11)
    k = 4
    near = np.repeat(scores, k) + rng.normal(scale=1e-3, size=400 * k)
    many_labels, patients = np.repeat(labels, k), np.repeat(np.arange(400), k)
    clustered = bootstrap_ci(many_labels, near, 1000, 0, patients=patients)["auroc_ci"]
    images = bootstrap_ci(many_labels, near, 1000, 0)["auroc_ci"]
    ratio = (clustered[1] - clustered[0]) / (images[1] - images[0])
    assert ratio == pytest.approx(np.sqrt(k), rel=0.15)


def test_delong_equals_the_textbook_kernel_on_tied_data():
    labels, a, b = correlated_scores(150, seed=6)
    a, b = np.round(a, 0), np.round(b, 0)  # few distinct values: many ties within and across classes
    aucs, covariance = auroc_covariance(labels, np.stack([a, b]))
    mask = labels.astype(bool)
    kernels = [textbook_kernel(s[mask], s[~mask]) for s in (a, b)]
    v10 = np.stack([k.mean(axis=1) for k in kernels])
    v01 = np.stack([k.mean(axis=0) for k in kernels])
    expected = np.cov(v10) / mask.sum() + np.cov(v01) / (~mask).sum()
    assert aucs == pytest.approx([k.mean() for k in kernels], abs=1e-12)
    assert aucs[0] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert covariance == pytest.approx(expected, abs=1e-12)
    test = delong(labels, a, b)
    assert test["se"] ** 2 == pytest.approx(expected[0, 0] + expected[1, 1] - 2 * expected[0, 1], abs=1e-12)


def test_clustered_delong_equals_a_loop_implementation_of_obuchowski():
    rng = np.random.default_rng(8)
    labels, a, b = correlated_scores(90, seed=8)
    a = np.round(a, 1)
    patients = rng.integers(0, 30, 90)  # mixed clusters: S11 is not zero
    _, covariance = auroc_covariance(labels, np.stack([a, b]), patients)
    assert covariance == pytest.approx(textbook_obuchowski(labels, np.stack([a, b]), patients), abs=1e-12)
    assert delong(labels, a, b, patients=patients)["method"].startswith("DeLong, Obuchowski")


def test_clustered_delong_on_exact_copies_is_delong_on_the_patients_alone():
    labels, a, b = correlated_scores(300, seed=9, gap=0.2)
    k = 3
    copies = [np.repeat(x, k) for x in (labels, a, b)]
    clustered = delong(*copies, patients=np.repeat(np.arange(300), k))
    alone = delong(labels, a, b)
    naive = delong(*copies)
    assert clustered["se"] == pytest.approx(alone["se"], rel=1e-9)
    assert clustered["auroc_diff"] == pytest.approx(alone["auroc_diff"], abs=1e-12)
    assert naive["se"] == pytest.approx(alone["se"] / np.sqrt(k), rel=0.02)  # what ignoring clusters claims


def test_delong_agrees_with_the_paired_bootstrap_on_large_samples():
    """On 4,000 images in clusters of 1-4, the clustered DeLong SE and the clustered paired-bootstrap SD of
    the AUROC difference agree within 10%: two different methods for one quantity."""
    labels, a, b = correlated_scores(4000, seed=3, gap=0.15)
    patients = np.random.default_rng(3).integers(0, 1600, 4000)
    test = delong(labels, a, b, patients=patients)
    boot = paired_bootstrap(labels, a, b, n_resamples=600, seed=0, patients=patients)
    assert test["auroc_a"] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert test["auroc_diff"] == pytest.approx(boot["auroc_diff"], abs=1e-12)
    assert test["se"] == pytest.approx(boot["auroc_diff_se"], rel=0.10)
    assert test["p_value"] < 0.05 and boot["auroc_diff_ci"][0] > 0


def test_delong_finds_no_difference_between_identical_models():
    labels, a, _ = correlated_scores(300, seed=4)
    test = delong(labels, a, a.copy())
    assert test["auroc_diff"] == 0.0 and test["p_value"] == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), max(0.09, 0.2)
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])


def test_youden_threshold_is_the_midpoint_of_the_maximising_interval():
    # perfect separation: any threshold in (0.3, 0.7] is optimal; the midpoint is 0.5, not the edge 0.7
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.7, 0.9])) == pytest.approx(0.5)
    labels, scores, _ = correlated_scores(600, seed=5)
    probs = np.round(1.0 / (1.0 + np.exp(-scores)), 2)
    threshold = youden_threshold(labels, probs)
    fpr, tpr, _ = roc_curve(labels, probs)
    j = threshold_metrics(labels, probs, threshold)
    assert j["sensitivity"] + j["specificity"] - 1 == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    # a brute-force grid: the maximising thresholds form an interval whose midpoint this is
    grid = np.linspace(0, 1, 20001)
    values = np.array([np.mean(probs[labels == 1] >= t) - np.mean(probs[labels == 0] >= t) for t in grid])
    best = grid[np.isclose(values, values.max(), atol=1e-12)]
    first_run = best[: np.argmax(np.diff(np.r_[best, 2.0]) > 1.5e-4) + 1]
    assert threshold == pytest.approx((first_run[0] + first_run[-1]) / 2, abs=1e-4)


def test_sensitivity_at_fixed_specificity_against_scikit_learn():
    labels, scores, _ = correlated_scores(800, seed=14)
    probs = np.round(1.0 / (1.0 + np.exp(-scores)), 3)
    fpr, tpr, _ = roc_curve(labels, probs)
    for specificity in (0.9, 0.95):
        result = sensitivity_at_specificity(labels, probs, specificity)
        assert result["sensitivity"] == pytest.approx(tpr[fpr <= 1 - specificity].max(), abs=1e-12)
        assert result["specificity"] >= specificity
        check = threshold_metrics(labels, probs, result["threshold"])
        assert (check["sensitivity"], check["specificity"]) == pytest.approx(
            (result["sensitivity"], result["specificity"])
        )


def test_threshold_metrics_against_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score

    labels, scores, _ = correlated_scores(600, seed=5)
    probs = 1.0 / (1.0 + np.exp(-scores))
    result = threshold_metrics(labels, probs, 0.5)
    tn, fp, fn, tp = confusion_matrix(labels, probs >= 0.5).ravel()
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (tp, fp, fn, tn)
    assert result["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert result["npv"] == pytest.approx(tn / (tn + fn))
    assert result["f1"] == pytest.approx(f1_score(labels, probs >= 0.5))


def test_calibration_of_a_miscalibrated_case_by_hand():
    from sklearn.metrics import brier_score_loss

    # bin [0.1, 0.2): four images at 0.15, one positive: |0.15 - 0.25| = 0.10
    # bin [0.8, 0.9): four images at 0.85, all positive:  |0.85 - 1.00| = 0.15  -> ECE = (0.10 + 0.15) / 2
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    probs = np.array([0.15] * 4 + [0.85] * 4)
    result = calibration(labels, probs)
    assert result["ece"] == pytest.approx(0.125)
    assert result["brier"] == pytest.approx((7 * 0.15**2 + 0.85**2) / 8)
    assert result["brier"] == pytest.approx(brier_score_loss(labels, probs))
    assert calibration(np.array([0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0]))["ece"] == 0.0


# ------------------------------------------------------------------------------ one model, two test sets
def test_set_difference_on_the_same_images_is_the_clustered_delong():
    """Two score vectors on one set: the difference of the two AUROCs, and its variance, are DeLong's with
    Obuchowski's clustered variance (checked against a loop implementation above), to rounding."""
    rng = np.random.default_rng(3)
    labels, a, b = correlated_scores(300, 4)
    patients = rng.integers(0, 180, size=300)
    ours = auroc_set_difference(labels, a[None], patients, labels, b[None], patients)
    reference = delong(labels, a, b, patients=patients)
    assert ours["delta_auroc"] == pytest.approx(reference["auroc_diff"], abs=1e-14)
    assert ours["se"] == pytest.approx(reference["se"], rel=1e-12)
    assert ours["per_seed"][0]["p"] == pytest.approx(reference["p_value"], rel=1e-9)
    unclustered = auroc_set_difference(labels, a[None], np.arange(300), labels, b[None], np.arange(300))
    assert unclustered["se"] == pytest.approx(delong(labels, a, b)["se"], rel=1e-12)


def test_set_difference_se_agrees_with_the_patient_bootstrap():
    """One model on a selection and on its superset, two images per patient: the clustered SE agrees with
    the SD of the difference over patient resamples of the union (AUROCs of the resampled image lists)."""
    rng = np.random.default_rng(5)
    labels_a, scores_a, patients_a, labels_b, scores_b, patients_b = nested_sets(
        rng, 120, 160, 220, shift=0.6, per_patient=2, rho=0.6
    )
    ours = auroc_set_difference(labels_a, scores_a, patients_a, labels_b, scores_b, patients_b)
    assert ours["n_patients_shared"] == ours["n_patients_a"] == 140 and ours["n_patients_b"] == 250
    expected = roc_auc_score(labels_a, scores_a[0]) - roc_auc_score(labels_b, scores_b[0])
    assert ours["delta_auroc"] == pytest.approx(expected, abs=1e-12)
    unique = np.unique(patients_b)
    rows_a = {p: np.flatnonzero(patients_a == p) for p in unique}
    rows_b = {p: np.flatnonzero(patients_b == p) for p in unique}
    boot = np.random.default_rng(6)

    def auroc(labels, scores):  # Mann-Whitney U / (m n), scipy's
        return (
            mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
            / labels.sum()
            / (1 - labels).sum()
        )

    deltas = []
    for _ in range(600):  # the SD of 600 resamples is within about 3% of its limit
        drawn = boot.choice(unique, size=unique.size)
        in_a = np.concatenate([rows_a[p] for p in drawn])
        in_b = np.concatenate([rows_b[p] for p in drawn])
        deltas.append(auroc(labels_a[in_a], scores_a[0, in_a]) - auroc(labels_b[in_b], scores_b[0, in_b]))
    assert ours["se"] == pytest.approx(np.std(deltas, ddof=1), rel=0.12)


@pytest.mark.parametrize(
    "regime",
    [
        # (positives, normals, others, seeds, seed sd, images per patient, patient share): one model; test
        # patients dominate; seeds dominate; both, with two images per patient
        (60, 80, 100, 1, 0.0, 1, 0.0),
        (60, 80, 100, 3, 0.05, 1, 0.0),
        (150, 200, 250, 3, 0.6, 1, 0.0),
        (150, 200, 250, 5, 0.3, 2, 0.5),
    ],
    ids=["one_model", "patient_dominated", "seed_dominated", "mixed_clustered"],
)
def test_set_difference_holds_its_error_rate_and_coverage_in_simulation(regime):
    """Seeded simulations with a known truth. Under the null (the other negatives shifted so that the
    expected difference is 0) p < 0.05 in at most 5% of studies plus twice its Monte Carlo error; under a
    known difference the 95% CI covers the truth in at least 93%."""
    n_pos, n_normal, n_other, seeds, seed_sd, per_patient, rho = regime
    rng = np.random.default_rng(sum(regime[:4]))
    shift = null_shift(seed_sd)  # where the expected difference is exactly 0
    assert nested_truth(n_normal, n_other, shift, seed_sd) == pytest.approx(0.0, abs=1e-12)
    truth = nested_truth(n_normal, n_other, 0.7, seed_sd)
    studies = 300
    rejected = covered = 0
    for _ in range(studies):
        null = auroc_set_difference(
            *nested_sets(rng, n_pos, n_normal, n_other, seeds, shift, seed_sd, per_patient, rho)
        )
        rejected += null["p"] < 0.05
        known = auroc_set_difference(
            *nested_sets(rng, n_pos, n_normal, n_other, seeds, 0.7, seed_sd, per_patient, rho)
        )
        covered += known["delta_auroc_ci"][0] <= truth <= known["delta_auroc_ci"][1]
    assert rejected / studies <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / studies)
    assert covered / studies >= 0.93
