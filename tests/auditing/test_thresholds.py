"""The contamination threshold's stated false-positive rate, on many simulated calibrations and clean images
(the end-to-end check is in test_audit.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, lognorm

from cxrsyn.auditing.thresholds import calibration_needed, order_statistic_threshold

# clean statistics: skewed and heavy-tailed like similarities' tails; any continuous law gives the same rates
CLEAN = lognorm(s=0.6)


@pytest.mark.parametrize("n", [1999, 999, 5000])
def test_false_positive_rate_over_many_calibrations_and_clean_images_is_the_stated_rate(n):
    """2,000 calibrations of n clean values, each threshold applied to 500 new clean images (a million
    images): the share flagged is k / (n + 1) <= 0.001, and each calibration's exact rate (the law's tail
    above its threshold) lies in the reported Beta interval 95% of the time."""
    rng = np.random.default_rng(n)
    calibrations, new_images, rate = 2000, 500, 0.001
    flagged = 0
    exact, inside = [], []
    for _ in range(calibrations):
        result = order_statistic_threshold(CLEAN.rvs(size=n, random_state=rng), rate)
        flagged += int((CLEAN.rvs(size=new_images, random_state=rng) > result["threshold"]).sum())
        exact.append(CLEAN.sf(result["threshold"]))
        low, high = result["achieved_rate_interval"]
        inside.append(low <= exact[-1] <= high)
    achieved = result["achieved_rate"]
    assert result["k"] == int(rate * (n + 1)) and achieved == pytest.approx(result["k"] / (n + 1))
    assert achieved <= rate and result["note"] is None
    images = calibrations * new_images
    # the flagged count is a sum of 2,000 calibrations' rates x 500 images: its sd is the rates' spread
    spread = np.std(exact) * new_images * np.sqrt(calibrations) + np.sqrt(images * achieved)
    assert abs(flagged - images * achieved) <= 3 * spread, (flagged, images * achieved)
    assert np.mean(exact) == pytest.approx(achieved, rel=0.06)  # E[rate] = k / (n + 1)
    assert np.mean(exact) <= rate * 1.06
    assert np.mean(inside) == pytest.approx(0.95, abs=2 * np.sqrt(0.05 * 0.95 / calibrations))


def test_the_rate_interval_is_the_binomial_tail_of_the_kth_largest():
    """Independent reference: the exceedance rate x of the k-th largest of n satisfies P(rate <= x) =
    P(Binomial(n, x) >= k), so the 2.5% and 97.5% points solve binom.sf(k - 1, n, x) = 0.025, 0.975."""
    for n, rate in ((1999, 0.001), (4999, 0.002), (999, 0.001)):
        result = order_statistic_threshold(np.arange(n, dtype=float), rate)
        low, high = result["achieved_rate_interval"]
        assert binom.sf(result["k"] - 1, n, low) == pytest.approx(0.025, rel=1e-6)
        assert binom.sf(result["k"] - 1, n, high) == pytest.approx(0.975, rel=1e-6)
        assert result["threshold"] == n - result["k"]  # the k-th largest of 0..n-1


def test_too_few_calibration_images_is_said_in_one_line_with_the_rate_achieved():
    result = order_statistic_threshold(
        np.r_[np.arange(80.0), np.inf, np.nan], 0.001, name="phantom_real pixels"
    )
    assert calibration_needed(0.001) == 999 and calibration_needed(0.01) == 99
    assert result["n"] == 80 and result["n_not_finite"] == 2 and result["k"] == 1
    assert result["threshold"] == 79.0 and result["achieved_rate"] == pytest.approx(1 / 81)
    assert result["note"] == (
        "phantom_real pixels: 80 calibration images cannot calibrate a false-positive rate of 0.001 (that "
        "needs 999); the threshold is their largest value, false-positive rate 1/81 = 0.0123"
    )
    assert "\n" not in result["note"]
    # simulated: the maximum of 80 clean values is exceeded by a new clean image 1/81 of the time
    rng = np.random.default_rng(0)
    thresholds = CLEAN.rvs(size=(20000, 80), random_state=rng).max(axis=1)
    assert CLEAN.sf(thresholds).mean() == pytest.approx(1 / 81, rel=0.03)


def test_no_finite_calibration_value_flags_nothing():
    result = order_statistic_threshold(np.array([np.inf, np.nan]), 0.001, name="tiny")
    assert (
        result["threshold"] == np.inf and result["k"] is None and "nothing can be flagged" in result["note"]
    )
    with pytest.raises(ValueError, match="false_positive_rate"):
        order_statistic_threshold(np.arange(5.0), 0.0)
