"""Agreement between readers: Fleiss' (1971) kappa for many raters, with a case-bootstrap CI.

``kappa = (P_bar - P_e) / (1 - P_e)`` from an N cases x k categories table of counts (every case read by the
same number of readers n): ``P_i = (sum_j n_ij^2 - n) / (n (n - 1))``, ``P_bar`` their mean,
``P_e = sum_j p_j^2`` with ``p_j`` the share of all readings in category j (statsmodels'
``fleiss_kappa(method="fleiss")``, the reference in the tests). The CI resamples cases with replacement
(percentile interval, seeded): cases, not readings, are the independent units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KAPPA_CI_METHOD = "percentile bootstrap over cases"


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of a cases x categories count table (rows with equal sums); None when undefined."""
    counts = np.asarray(counts, np.float64)
    if not len(counts) or counts[0].sum() < 2:
        return None  # agreement needs at least two readers
    values = _kappas(counts[None])
    return None if np.isnan(values[0]) else float(values[0])


def _kappas(tables: np.ndarray) -> np.ndarray:
    """Fleiss' kappa of each of a stack of tables (B x N x k)."""
    raters = tables[0, 0].sum()
    cases = tables.shape[1]
    agreement = ((tables**2).sum(axis=2) - raters) / (raters * (raters - 1))
    shares = tables.sum(axis=1) / (cases * raters)
    expected = (shares**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            np.isclose(expected, 1.0), np.nan, (agreement.mean(axis=1) - expected) / (1 - expected)
        )


def fleiss_kappa_ci(
    counts: np.ndarray, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Fleiss' kappa with its case-bootstrap percentile CI (``KAPPA_CI_METHOD``)."""
    counts = np.asarray(counts, np.float64)
    kappa = fleiss_kappa(counts) if len(counts) and counts[0].sum() >= 2 else None
    result: dict[str, Any] = {
        "kappa": kappa,
        "ci": None,
        "ci_method": f"{KAPPA_CI_METHOD}, {n_resamples} resamples, seed {seed}",
        "cases": int(counts.shape[0]),
        "readers": int(counts[0].sum()) if len(counts) else 0,
    }
    if kappa is None or n_resamples <= 0:
        return result
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(n_resamples, len(counts)))
    values = _kappas(counts[draws])
    values = values[~np.isnan(values)]
    if len(values):
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        result["ci"] = [float(low), float(high)]
    return result


def category_counts(answers: np.ndarray, categories: list[Any]) -> np.ndarray:
    """readers x cases answers -> cases x categories counts."""
    answers = np.asarray(answers)
    return np.stack([(answers == category).sum(axis=0) for category in categories], axis=1)
