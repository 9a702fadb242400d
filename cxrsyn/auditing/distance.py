"""Part 3, distance to real data and diversity.

KID and FID between the audited set and each reference set, overall and per class, computed by torchmetrics'
``KernelInceptionDistance`` and ``FrechetInceptionDistance`` on features the audit already has (the
embedding model's: by default the auditor's penultimate layer; Inception needs torch-fidelity and weights
this project does not fetch). Features enter through a pass-through module, as torchmetrics allows a custom
feature extractor. KID gets a percentile bootstrap CI (both sets resampled with replacement,
``n_resamples`` times; within a resample, two copies of one image are not a pair, as in the unbiased
estimate itself). Measured in a seeded simulation (tests/auditing/test_parts.py): under a shift the CI
covers the true KID 95% of the time; under identical distributions it covers 0 every time (the unbiased
estimate is degenerate there and the bootstrap cautious: no false alarm). FID is a point estimate and biased
upward at small n (a few hundred images): compare FIDs only at equal n.

Diversity inside the audited set: the mean pairwise cosine similarity of its embeddings (beside the same
number for each reference set) and the share of near-duplicate pairs (pairs above the reference set's
calibrated contamination thresholds): a generator repeating itself inflates n.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


@dataclass(frozen=True)
class DistanceSettings:
    """The ``distance`` block of ``conf/audit.yaml`` (which says what each entry does)."""

    kid_subsets: int
    kid_subset_size: int
    enabled: bool = True
    n_resamples: int | None = None  # KID bootstrap CI (0 or None: none)
    alpha: float = 0.05
    fid: bool = True
    fid_per_class: bool = False
    pixel_near_duplicates: bool = False


class PassThrough(torch.nn.Module):
    """A 'feature extractor' for torchmetrics that returns its input: features computed beforehand."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def kid(audited: np.ndarray, reference: np.ndarray, subsets: int, subset_size: int) -> tuple[float, float]:
    """torchmetrics' KID (mean and std over ``subsets`` random subsets) of two feature arrays."""
    size = min(subset_size, len(audited), len(reference))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer": that is the plan
        metric = KernelInceptionDistance(PassThrough(audited.shape[1]), subsets=subsets, subset_size=size)
    metric.update(torch.from_numpy(reference).double(), real=True)
    metric.update(torch.from_numpy(audited).double(), real=False)
    mean, std = metric.compute()
    return float(mean), float(std)


def fid(audited: np.ndarray, reference: np.ndarray) -> float:
    metric = FrechetInceptionDistance(PassThrough(audited.shape[1]))
    metric.update(torch.from_numpy(reference).float(), real=True)
    metric.update(torch.from_numpy(audited).float(), real=False)
    return float(metric.compute())


def distances(
    audited: np.ndarray, reference: np.ndarray, settings: DistanceSettings, seed: int, with_fid: bool = True
) -> dict[str, Any]:
    """KID (with its bootstrap CI) and FID of two feature arrays; None where a set has fewer than 2."""
    if len(audited) < 2 or len(reference) < 2:
        return {"n_audited": len(audited), "n_reference": len(reference), "kid": None, "fid": None}
    torch.manual_seed(seed)  # torchmetrics draws KID's subsets from torch's global generator
    subsets, subset_size = int(settings.kid_subsets), int(settings.kid_subset_size)
    value, spread = kid(audited, reference, subsets, subset_size)
    result: dict[str, Any] = {
        "n_audited": len(audited),
        "n_reference": len(reference),
        "kid": value,
        "kid_subset_std": spread,
        "fid": fid(audited, reference) if with_fid and settings.fid else None,
    }
    n_resamples = int(settings.n_resamples or 0)
    if n_resamples:
        rng = np.random.default_rng(seed)
        values = bootstrap_kid(audited, reference, n_resamples, rng)
        alpha = float(settings.alpha)
        result["kid_ci"] = [float(v) for v in np.quantile(values, [alpha / 2, 1 - alpha / 2])]
        result["kid_ci_method"] = (
            f"percentile bootstrap, {n_resamples} resamples of both sets with replacement (seed {seed}), "
            "each scored by the unbiased polynomial-kernel MMD of KID on the whole resample, pairs of copies "
            "of one image left out"
        )
    return result


def poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel (degree 3, gamma 1/d, coef 1), as torchmetrics defines it."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def bootstrap_kid(
    audited: np.ndarray, reference: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """KID of ``n_resamples`` bootstrap resamples. The kernel matrices are computed once; a resample is a
    vector of draw counts c per set and takes the unbiased MMD estimate over pairs of *different* original
    images: copies of one image drawn twice are not a pair (their kernel value is the image's similarity
    with itself, which the unbiased estimate leaves out). Within a set: (c'Kc - (c*c)'diag K) / (m^2 - sum
    c^2); across: c'K d / (m n). Without duplicates this is KID on one subset as large as the sets."""
    x = torch.from_numpy(audited).double()
    y = torch.from_numpy(reference).double()
    k_xx, k_yy, k_xy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
    m, n = len(x), len(y)
    # draw counts of each image in each resample (m draws with replacement: multinomial)
    c = torch.from_numpy(rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples)).double()
    d = torch.from_numpy(rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)).double()
    return (_within(c, k_xx) + _within(d, k_yy) - 2 * ((c @ k_xy) * d).sum(1) / (m * n)).numpy()


def _within(counts: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Mean kernel value over pairs of different original images of each resample (rows of draw counts)."""
    pairs = ((counts @ kernel) * counts).sum(1) - (counts * counts) @ kernel.diagonal()
    return pairs / (counts.sum(1) ** 2 - (counts * counts).sum(1))


def mean_pairwise_cosine(embeddings: np.ndarray, max_n: int = 2000, seed: int = 0) -> float | None:
    if len(embeddings) < 2:
        return None
    if len(embeddings) > max_n:
        embeddings = embeddings[np.random.default_rng(seed).choice(len(embeddings), max_n, replace=False)]
    x = torch.from_numpy(embeddings).double()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sims = x @ x.T
    n = len(x)
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))
