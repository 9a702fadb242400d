"""Simulated studies with a known truth, at the level of predictions: the error rates of a study-level method.

Each simulated study has ``n_seeds`` trained models per arm, all scored on the same test patients (the crossed
design of a real study). The score of arm a, seed s on patient i with label y_i (binormal, equal variance):

    score = y_i * (mu_a + t_as) + u_i + v_ai + w_asi

- ``t_as ~ N(0, seed_sd^2)``: the seed's effect on how well the model separates the classes (seed variance);
- ``u_i ~ N(0, patient_sd^2)``: how the patient looks to every model (shared by both arms: cancels in a
  paired difference);
- ``v_ai ~ N(0, arm_patient_sd^2)``: how the patient looks to the recipe a, shared by all its seeds (the
  test-patient noise of a difference that more seeds do not average away);
- ``w_asi ~ N(0, model_noise_sd^2)``: one trained model's idiosyncrasy on the patient (averages over seeds).

Given seed s, arm a's population AUROC is Phi((mu_a + t_as) / sqrt(2 sigma^2)) with sigma^2 the sum of the
three patient-level variances, so the recipe's (mean over seeds) AUROC is
Phi(mu_a / sqrt(2 sigma^2 + seed_sd^2)) and the true difference is known in closed form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Regime:
    name: str
    seed_sd: float
    patient_sd: float
    arm_patient_sd: float
    model_noise_sd: float
    mu_b: float = 1.5
    gap: float = 0.0  # mu_a - mu_b: 0 is the null (identical recipes)
    n_pos: int = 100
    n_neg: int = 100

    @property
    def true_delta_auroc(self) -> float:
        spread = np.sqrt(
            2 * (self.patient_sd**2 + self.arm_patient_sd**2 + self.model_noise_sd**2) + self.seed_sd**2
        )
        return float(norm.cdf((self.mu_b + self.gap) / spread) - norm.cdf(self.mu_b / spread))

    def with_gap(self, gap: float) -> Regime:
        return replace(self, gap=gap)


# The regimes of the suite and the benchmark (at 100 + 100 test patients): who dominates the variance of
# a per-seed AUROC difference.
REGIMES = (
    # training seeds: the per-seed differences scatter far more than test sampling explains
    Regime("seed-dominated", seed_sd=0.45, patient_sd=1.0, arm_patient_sd=0.1, model_noise_sd=0.1),
    # test patients: recipes err on the same patients whatever the seed; seeds barely differ
    Regime("patient-dominated", seed_sd=0.0, patient_sd=0.5, arm_patient_sd=0.8, model_noise_sd=0.1),
    # each model's own noise on the patients, a little seed effect (the per-image noise case)
    Regime("model-noise", seed_sd=0.05, patient_sd=0.5, arm_patient_sd=0.0, model_noise_sd=0.8),
    # all of them
    Regime("mixed", seed_sd=0.2, patient_sd=0.6, arm_patient_sd=0.4, model_noise_sd=0.4),
)


def simulate_scores(
    regime: Regime, n_seeds: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One simulated study: labels (n,), scores of arm a and arm b, each (n_seeds, n)."""
    labels = np.r_[np.ones(regime.n_pos, int), np.zeros(regime.n_neg, int)]
    n = labels.size
    shared = rng.normal(0.0, regime.patient_sd, n)
    arms = []
    for mu in (regime.mu_b + regime.gap, regime.mu_b):
        recipe = rng.normal(0.0, regime.arm_patient_sd, n)
        seed_effect = rng.normal(0.0, regime.seed_sd, (n_seeds, 1))
        noise = rng.normal(0.0, regime.model_noise_sd, (n_seeds, n))
        arms.append(labels * (mu + seed_effect) + shared + recipe + noise)
    return labels, arms[0], arms[1]


Method = Callable[[np.ndarray, np.ndarray, np.ndarray, int], dict[str, Any]]


def error_rates(
    method: Method, regime: Regime, n_seeds: int, n_studies: int, seed: int, alpha: float = 0.05
) -> dict[str, float]:
    """Run ``method(labels, scores_a, scores_b, study_seed)`` (which returns ``delta_auroc_ci``) on
    ``n_studies`` simulated studies of ``regime``: the share whose CI misses the true difference (under the
    null, the false-positive rate; otherwise 1 - coverage), and ``mc_se``, the Monte Carlo standard error of
    that share were it the nominal ``alpha``."""
    rng = np.random.default_rng([seed, n_seeds, int(1000 * regime.gap)])
    truth = regime.true_delta_auroc
    misses = 0
    for study in range(n_studies):
        labels, a, b = simulate_scores(regime, n_seeds, rng)
        low, high = method(labels, a, b, study)["delta_auroc_ci"]
        misses += not (low <= truth <= high)
    rate = misses / n_studies
    return {
        "truth": truth,
        "miss_rate": rate,
        "coverage": 1.0 - rate,
        "mc_se": float(np.sqrt(alpha * (1 - alpha) / n_studies)),
    }
