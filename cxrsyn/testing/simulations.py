"""Simulated studies with a known truth, for checking a statistic's false-positive rate and coverage.

``nested_sets``: RSNA's two selections in miniature (the paper's Normal vs Lung Opacity, and the full Target
task that also holds the "not normal" negatives), scored by several seeds' models; ``nested_truth``: the
AUROC difference between the two sets that the simulation's models have in expectation.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

POSITIVE_MEAN = 1.2  # latent score of a positive image; normal negatives are centred at 0
SEED_NOISE_SD = 0.5  # each seed's model adds its own noise to every image's score


def nested_sets(
    rng: np.random.Generator,
    n_pos: int,
    n_normal: int,
    n_other: int,
    seeds: int = 1,
    shift: float = 0.0,
    seed_sd: float = 0.0,
    per_patient: int = 1,
    rho: float = 0.0,
) -> tuple[np.ndarray, ...]:
    """Set a (the selection) holds the positives and the normal negatives, set b (the full task) also the
    other negatives; both hold the same images. ``per_patient`` images per patient share a patient effect
    (share ``rho`` of the unit latent variance). Seed s scores an image as its latent value, plus u_s on the
    other negatives (u_s ~ N(0, ``seed_sd``)), plus noise (sd ``SEED_NOISE_SD``); the other negatives are
    centred at ``shift``. Returns labels, scores (seeds x images) and patients of set a, then of set b."""
    groups = np.repeat([0, 1, 2], [n_pos, n_normal, n_other])  # positive, normal, other
    patients = np.repeat(np.arange(groups.size // per_patient + 1), per_patient)[: groups.size]
    patient_effect = rng.normal(scale=np.sqrt(rho), size=patients.max() + 1)[patients]
    latent = np.select([groups == 0, groups == 2], [POSITIVE_MEAN, shift], 0.0)
    latent = latent + patient_effect + rng.normal(scale=np.sqrt(1 - rho), size=groups.size)
    u = rng.normal(scale=seed_sd, size=(seeds, 1))
    scores = latent + u * (groups == 2) + rng.normal(scale=SEED_NOISE_SD, size=(seeds, groups.size))
    labels = (groups == 0).astype(int)
    in_a = groups != 2
    return labels[in_a], scores[:, in_a], patients[in_a], labels, scores, patients


def nested_truth(n_normal: int, n_other: int, shift: float, seed_sd: float) -> float:
    """The expected AUROC(set a) - AUROC(set b) of ``nested_sets`` over test sets and seeds: set b's AUROC
    is the negatives-weighted mean of the AUROCs against each kind of negative (binormal), the one against
    the other negatives averaged over the seed shift."""
    variance = 2 * (1 + SEED_NOISE_SD**2)
    weight = n_other / (n_normal + n_other)
    return weight * (
        norm.cdf(POSITIVE_MEAN / np.sqrt(variance))
        - norm.cdf((POSITIVE_MEAN - shift) / np.sqrt(variance + seed_sd**2))
    )


def null_shift(seed_sd: float) -> float:
    """The centre of the other negatives at which ``nested_truth`` is exactly 0 (a seed spread bends it)."""
    return POSITIVE_MEAN * (1 - np.sqrt(1 + seed_sd**2 / (2 * (1 + SEED_NOISE_SD**2))))
