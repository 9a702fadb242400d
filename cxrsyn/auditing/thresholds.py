"""A flagging threshold with a stated per-image false-positive rate: the order-statistic (conformal) rule.

Calibration gives n values of a statistic for clean images (reference images searched against the images of
other reference patients, by the procedure that scores audited images). A new clean image's value is taken
to be exchangeable with them. The threshold is the k-th largest calibration value and an image is flagged
when its value is above it. Then, over calibrations and new clean images, P(flagged) = k / (n + 1) exactly
for continuous values (at most that with ties), so k = floor(rate x (n + 1)) keeps the false-positive rate
at most the stated ``rate``. Given one calibration, the rate of that threshold is random: it follows
Beta(k, n + 1 - k), whose central interval is reported beside it.

The rule exists when k >= 1, i.e. n >= 1 / rate - 1 (999 calibration images for 0.001). With fewer the
threshold is their maximum, the rate achieved 1 / (n + 1), and the result says so in one line (``note``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import beta


def calibration_needed(rate: float) -> int:
    """The fewest calibration values for which the k-th largest has exceedance probability <= ``rate``."""
    return max(1, math.ceil(1.0 / rate - 1.0 - 1e-9))


def order_statistic_threshold(
    values: np.ndarray, rate: float, level: float = 0.95, name: str = "calibration"
) -> dict[str, Any]:
    """The threshold for a per-image false-positive rate ``rate`` from clean ``values`` (non-finite values
    are left out and counted). Returns ``threshold``, ``k`` (it is the k-th largest), ``n``, ``n_not_finite``,
    ``false_positive_rate`` (asked), ``achieved_rate`` (k / (n + 1)), ``achieved_rate_interval`` (the
    ``level`` central interval of Beta(k, n + 1 - k)), ``rule``, and ``note`` (None, or one line when the
    values are too few for the rate asked)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"false_positive_rate={rate} must lie strictly between 0 and 1")
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    n = int(finite.size)
    result: dict[str, Any] = {
        "n": n,
        "n_not_finite": int(values.size - n),
        "false_positive_rate": rate,
        "calibration_needed": calibration_needed(rate),
        "note": None,
    }
    if n == 0:
        result.update(threshold=math.inf, k=None, achieved_rate=None, achieved_rate_interval=None)
        result["note"] = f"{name}: no finite calibration value, so nothing can be flagged"
        result["rule"] = "no calibration values: nothing flagged"
        return result
    k = math.floor(rate * (n + 1) + 1e-9)
    if k < 1:
        k = 1
        result["note"] = (
            f"{name}: {n} calibration images cannot calibrate a false-positive rate of {rate:g} (that needs "
            f"{calibration_needed(rate)}); the threshold is their largest value, false-positive rate "
            f"1/{n + 1} = {1 / (n + 1):.4f}"
        )
    tail = (1.0 - level) / 2.0
    result.update(
        threshold=float(np.sort(finite)[-k]),
        k=k,
        achieved_rate=k / (n + 1),
        achieved_rate_interval=[float(v) for v in beta.ppf([tail, 1.0 - tail], k, n + 1 - k)],
    )
    result["rule"] = (
        f"above the {_ordinal(k)}largest of {n} clean calibration values: per-image false-positive rate "
        f"{k}/{n + 1} = {k / (n + 1):.4f} (asked {rate:g}; this calibration's own rate lies in "
        f"{result['achieved_rate_interval'][0]:.4f}-{result['achieved_rate_interval'][1]:.4f} with "
        f"{100 * level:g}% probability, Beta({k}, {n + 1 - k}))"
    )
    return result


def _ordinal(k: int) -> str:
    """'' for 1 (the largest), else '2nd ', '3rd ', '11th ' ..."""
    if k == 1:
        return ""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix} "
