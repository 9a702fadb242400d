"""Multi-reader multi-case (MRMC) analysis with readers and cases both random: Obuchowski-Rockette (1995)
with Hillis's (2007) denominator degrees of freedom and jackknife covariances, as the OR-DBM MRMC software
(Schartz, Hillis, Pesce, Berbaum) and RJafroc compute it.

Input: a figure of merit (FOM) for every modality x reader, and its leave-one-case-out values (the jackknife).
The jackknife covariance of two FOMs is ``(C - 1) / C * sum_k (a_k - mean a)(b_k - mean b)`` over the C cases
left out; averaged over pairs of FOMs it gives the OR error variance and covariances:

- ``var_error``: same modality, same reader; ``cov1``: different modalities, same reader;
  ``cov2``: same modality, different readers; ``cov3``: different modalities, different readers.

Random readers and random cases (OR "Analysis 1"):

- modalities equal: ``F = MS(T) / (MS(T*R) + R max(cov2 - cov3, 0))`` on (T - 1, ddf_H) degrees of freedom,
  ``ddf_H = (MS(T*R) + R max(cov2 - cov3, 0))^2 / (MS(T*R)^2 / ((T - 1)(R - 1)))``;
- one modality (``single``): reader-averaged FOM ``+- t(ddf) SE`` with
  ``SE = sqrt((MS(R) + R max(cov2, 0)) / R)`` and ``ddf = (MS(R) + R max(cov2, 0))^2 / (MS(R)^2 / (R - 1))``
  ("ddf_H_single"), and the t test of FOM = ``null_value`` (0.5 for the AUROC: chance) on the same SE and ddf.

Fixed readers, random cases (``readers_fixed``, OR "Analysis 2c"): ``SE = sqrt((var_error + (R - 1) max(cov2,
0)) / R)``, normal interval. Checked against the published OR-DBM MRMC 2.51 output for the Van Dyke et al.
(1993) data (tests/readers/data/).

Jackknife FOMs are exact and fast: leaving out positive case i changes the trapezoidal AUROC to
``(m AUROC - V10_i) / (m - 1)`` (V10_i: the share of negatives it outranks, ties half), and leaving out a
negative case j to ``(n AUROC - V01_j) / (n - 1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import f as f_distribution
from scipy.stats import norm
from scipy.stats import t as t_distribution

METHOD = (
    "Obuchowski-Rockette, readers and cases random, Hillis (2007) denominator degrees of freedom, "
    "jackknife covariances"
)
FIXED_READERS_METHOD = (
    "Obuchowski-Rockette, readers fixed, cases random (normal interval), jackknife covariances"
)


# ------------------------------------------------------------------------------------------- figures of merit
def auroc_jackknife(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoidal (Mann-Whitney, ties half) AUROC of each row of ``scores`` (K x C) against ``truth`` (C,
    1 = positive), and its leave-one-case-out values (K x C)."""
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    truth = np.asarray(truth).astype(bool)
    positives, negatives = scores[:, truth], scores[:, ~truth]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"the AUROC jackknife needs at least 2 cases of each class (have {m} and {n})")
    # K x m x n comparisons: fine for reader studies (hundreds of cases)
    wins = (positives[:, :, None] > negatives[:, None, :]) + 0.5 * (
        positives[:, :, None] == negatives[:, None, :]
    )
    v10 = wins.mean(axis=2)  # per positive: share of negatives it outranks
    v01 = wins.mean(axis=1)  # per negative: share of positives that outrank it
    auc = v10.mean(axis=1)
    left_out = np.empty_like(scores)
    left_out[:, truth] = (m * auc[:, None] - v10) / (m - 1)
    left_out[:, ~truth] = (n * auc[:, None] - v01) / (n - 1)
    return auc, left_out


def accuracy_jackknife(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share correct of each row of ``correct`` (K x C, booleans) and its leave-one-case-out values."""
    correct = np.atleast_2d(np.asarray(correct, np.float64))
    cases = correct.shape[1]
    accuracy = correct.mean(axis=1)
    return accuracy, (cases * accuracy[:, None] - correct) / (cases - 1)


# ---------------------------------------------------------------------------------------------- OR analysis
def jackknife_covariances(left_out: np.ndarray) -> dict[str, float]:
    """OR error variance and covariances from leave-one-case-out FOMs (T modalities x R readers x C cases)."""
    modalities, readers, cases = left_out.shape
    flat = left_out.reshape(modalities * readers, cases)
    deviations = flat - flat.mean(axis=1, keepdims=True)
    covariance = (cases - 1) / cases * (deviations @ deviations.T)
    modality = np.repeat(np.arange(modalities), readers)
    reader = np.tile(np.arange(readers), modalities)
    same_t = modality[:, None] == modality[None, :]
    same_r = reader[:, None] == reader[None, :]

    def mean_over(mask: np.ndarray) -> float | None:  # None: no such pair (one modality, or one reader)
        return float(covariance[mask].mean()) if mask.any() else None

    return {
        "var_error": mean_over(same_t & same_r),
        "cov1": mean_over(~same_t & same_r),
        "cov2": mean_over(same_t & ~same_r),
        "cov3": mean_over(~same_t & ~same_r),
    }


def obuchowski_rockette(
    foms: np.ndarray,
    left_out: np.ndarray,
    alpha: float = 0.05,
    null_value: float | None = 0.5,
    modality_names: list[str] | None = None,
) -> dict[str, Any]:
    """OR analysis (module docstring) of ``foms`` (T x R) with their jackknife values (T x R x C)."""
    foms = np.atleast_2d(np.asarray(foms, np.float64))
    left_out = np.asarray(left_out, np.float64)
    if left_out.ndim == 2:
        left_out = left_out[None]
    modalities, readers = foms.shape
    names = modality_names or [str(t) for t in range(modalities)]
    covariances = jackknife_covariances(left_out)
    result: dict[str, Any] = {
        "method": METHOD,
        "alpha": alpha,
        "readers": readers,
        "cases": int(left_out.shape[2]),
        "modalities": names,
        "foms": foms.tolist(),
        **covariances,
        "single": {},
    }
    if readers < 2:
        result["note"] = "one reader: readers cannot be treated as random (no reader variance)"
    for t, name in enumerate(names):
        single = _single_modality(foms[t], left_out[t], alpha, null_value)
        result["single"][name] = single
    if modalities >= 2 and readers >= 2:
        result["comparison"] = _compare_modalities(foms, covariances, alpha)
    return result


def _single_modality(
    foms: np.ndarray, left_out: np.ndarray, alpha: float, null_value: float | None
) -> dict[str, Any]:
    readers = len(foms)
    mean = float(foms.mean())
    covariances = jackknife_covariances(left_out[None])
    var_error = covariances["var_error"]
    cov2 = covariances["cov2"] if readers >= 2 else 0.0
    fixed_se = float(np.sqrt(max(var_error + (readers - 1) * max(cov2, 0.0), 0.0) / readers))
    z = norm.ppf(1 - alpha / 2)
    entry: dict[str, Any] = {
        "fom": mean,
        "reader_foms": foms.tolist(),
        "var_error": var_error,
        "cov2": covariances["cov2"],
        "readers_fixed": {
            "se": fixed_se,
            "ci": [mean - z * fixed_se, mean + z * fixed_se],
            "method": FIXED_READERS_METHOD,
        },
    }
    if readers < 2:
        entry.update({"ms_r": None, "se": None, "ddf": None, "ci": None, "t": None, "p_value": None})
        return entry
    ms_r = float(((foms - mean) ** 2).sum() / (readers - 1))
    denominator = ms_r + readers * max(cov2, 0.0)
    se = float(np.sqrt(denominator / readers))
    ddf = float(denominator**2 / (ms_r**2 / (readers - 1))) if ms_r > 0 else float("inf")
    quantile = float(t_distribution.ppf(1 - alpha / 2, ddf))
    entry.update(
        {"ms_r": ms_r, "se": se, "ddf": _finite(ddf), "ci": [mean - quantile * se, mean + quantile * se]}
    )
    entry["method"] = METHOD
    if null_value is not None and se > 0:
        statistic = (mean - null_value) / se
        entry.update(
            {
                "null_value": null_value,
                "t": float(statistic),
                "p_value": float(2 * t_distribution.sf(abs(statistic), ddf)),
            }
        )
    return entry


def _compare_modalities(foms: np.ndarray, covariances: dict[str, float], alpha: float) -> dict[str, Any]:
    modalities, readers = foms.shape
    grand = foms.mean()
    modality_means, reader_means = foms.mean(axis=1), foms.mean(axis=0)
    ms_t = readers * float(((modality_means - grand) ** 2).sum()) / (modalities - 1)
    ms_r = modalities * float(((reader_means - grand) ** 2).sum()) / (readers - 1)
    interaction = foms - modality_means[:, None] - reader_means[None, :] + grand
    ms_tr = float((interaction**2).sum()) / ((modalities - 1) * (readers - 1))
    error_term = ms_tr + readers * max(float(covariances["cov2"]) - float(covariances["cov3"]), 0.0)
    ddf = error_term**2 / (ms_tr**2 / ((modalities - 1) * (readers - 1))) if ms_tr > 0 else float("inf")
    statistic = ms_t / error_term
    p_value = float(f_distribution.sf(statistic, modalities - 1, ddf))
    se_difference = float(np.sqrt(2.0 / readers * error_term))
    quantile = float(t_distribution.ppf(1 - alpha / 2, ddf))
    differences = {}
    for a in range(modalities):
        for b in range(a + 1, modalities):
            difference = float(modality_means[a] - modality_means[b])
            differences[f"{a}-{b}"] = {
                "difference": difference,
                "se": se_difference,
                "ci": [difference - quantile * se_difference, difference + quantile * se_difference],
                "p_value": float(2 * t_distribution.sf(abs(difference) / se_difference, ddf)),
            }
    return {
        "ms_t": ms_t,
        "ms_r": ms_r,
        "ms_tr": ms_tr,
        "error_term": float(error_term),
        "f": float(statistic),
        "ndf": modalities - 1,
        "ddf": _finite(ddf),
        "p_value": p_value,
        "differences": differences,
        "method": METHOD,
    }


def _finite(ddf: float) -> float | None:
    """ddf for JSON: None when infinite (MS = 0: no reader variation; the t quantile is the normal one)."""
    return float(ddf) if np.isfinite(ddf) else None
