"""Agreement between what was asked and what a reader saw: confusion tables, observed agreement with a
binomial CI, Cohen's kappa with its large-sample CI, the one-sided exact binomial test of "agreement at least
a threshold", and Holm's step-down adjustment over many such tests.

- Observed agreement: the share of items whose reading equals the request; its CI is Wilson's score interval
  (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``); per-cell CIs are Clopper-Pearson (exact).
- Cohen's kappa (unweighted): (p_o - p_e) / (1 - p_e), p_e from the table's margins. Its CI is kappa ± z SE
  with the large-sample variance of Fleiss, Cohen and Everitt (1969), the one statsmodels' ``cohens_kappa``
  reports, clipped to [-1, 1]; undefined (None) when p_e = 1 (a single category on both sides).
- ``agreement_below``: exact binomial p-value of H0 "agreement >= threshold" against "agreement < threshold".
- ``holm``: Holm (1979) adjusted p-values, controlling the family-wise error rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

WILSON = "Wilson score interval"
CLOPPER_PEARSON = "Clopper-Pearson exact interval"
KAPPA_CI = "kappa ± z SE, large-sample variance of Fleiss, Cohen and Everitt (1969), clipped to [-1, 1]"


def confusion_table(asked: Sequence[str], read: Sequence[str], categories: Sequence[str]) -> pd.DataFrame:
    """Counts with the asked value as rows and the read value as columns, both in ``categories``' order."""
    table = pd.crosstab(
        pd.Categorical(list(asked), categories=list(categories)),
        pd.Categorical(list(read), categories=list(categories)),
        dropna=False,
    )
    table.index.name, table.columns.name = "asked", "read"
    return table.reindex(index=list(categories), columns=list(categories), fill_value=0).astype(int)


def proportion_ci(successes: int, n: int, alpha: float = 0.05, method: str = "wilson") -> list[float] | None:
    """Two-sided 1 - alpha CI of a binomial proportion: ``wilson`` (score) or ``exact`` (Clopper-Pearson)."""
    if n == 0:
        return None
    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=1 - alpha, method=method)
    return [float(interval.low), float(interval.high)]


def cohen_kappa(table: np.ndarray | pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Unweighted Cohen's kappa of a square count table (rows one rater, columns the other) with its
    large-sample standard error and 1 - alpha CI (``KAPPA_CI``)."""
    counts = np.asarray(table, dtype=float)
    n = counts.sum()
    result: dict[str, Any] = {"kappa": None, "kappa_se": None, "kappa_ci": None, "kappa_ci_method": KAPPA_CI}
    if n == 0:
        return result
    p = counts / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed, expected = float(np.trace(p)), float(rows @ cols)
    if np.isclose(expected, 1.0):
        return result
    kappa = (observed - expected) / (1.0 - expected)
    term_a = float((np.diag(p) * (1.0 - (rows + cols) * (1.0 - kappa)) ** 2).sum())
    cross = p * (cols[:, None] + rows[None, :]) ** 2  # p_ij (c_i + r_j)^2 off the diagonal
    np.fill_diagonal(cross, 0.0)
    term_b = (1.0 - kappa) ** 2 * float(cross.sum())
    term_c = (kappa - expected * (1.0 - kappa)) ** 2
    variance = max((term_a + term_b - term_c) / (1.0 - expected) ** 2 / n, 0.0)
    se = float(np.sqrt(variance))
    z = float(norm.ppf(1 - alpha / 2))
    # kappa lies in [-1, 1]: the interval is clipped there (the large-sample interval may run past 1)
    low, high = max(kappa - z * se, -1.0), min(kappa + z * se, 1.0)
    result.update(kappa=float(kappa), kappa_se=se, kappa_ci=[float(low), float(high)])
    return result


def agreement_below(successes: int, n: int, threshold: float) -> float | None:
    """Exact one-sided binomial p-value of H0 "agreement >= threshold" (small p: agreement is below it)."""
    if n == 0:
        return None
    return float(binomtest(int(successes), int(n), float(threshold), alternative="less").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input's order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(value) for value in adjusted]


def agreement(
    asked: Sequence[str], read: Sequence[str], categories: Sequence[str], alpha: float = 0.05
) -> dict[str, Any]:
    """Observed agreement with its Wilson CI, Cohen's kappa with its CI, and the confusion table."""
    table = confusion_table(asked, read, categories)
    n = int(table.to_numpy().sum())
    agreeing = int(np.trace(table.to_numpy()))
    return {
        "n": n,
        "agreement": agreeing / n if n else None,
        "agreement_ci": proportion_ci(agreeing, n, alpha, "wilson"),
        "agreement_ci_method": WILSON,
        **cohen_kappa(table.to_numpy(), alpha),
        "confusion": {
            "categories": list(categories),
            "rows_asked_columns_read": table.to_numpy().tolist(),
        },
    }
