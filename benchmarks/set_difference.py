"""False-positive rate and coverage of the comparison between two test sets with the same models
(``cxrsyn.evaluation.statistics.auroc_set_difference``), on simulated studies with a known truth
(``cxrsyn.testing.simulations``): the fuller version of the seeded test in tests/evaluation/test_statistics.py.

    python benchmarks/set_difference.py [--studies 2000]

Per regime it prints the share of null studies (expected difference 0) with p < 0.05 and the share of
studies under a known difference whose 95% CI covers it, with their Monte Carlo standard errors.
"""

from __future__ import annotations

import argparse

import numpy as np

from cxrsyn.evaluation.statistics import auroc_set_difference
from cxrsyn.testing.simulations import nested_sets, nested_truth, null_shift

# name: (positives, normal negatives, other negatives, seeds, seed sd, images per patient, patient share)
REGIMES = {
    "one model": (60, 80, 100, 1, 0.0, 1, 0.0),
    "3 seeds, test patients dominate": (60, 80, 100, 3, 0.05, 1, 0.0),
    "3 seeds, seeds dominate": (150, 200, 250, 3, 0.6, 1, 0.0),
    "5 seeds, both, 2 images per patient": (150, 200, 250, 5, 0.3, 2, 0.5),
}
KNOWN_SHIFT = 0.7  # the other negatives' centre under the alternative


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--studies", type=int, default=2000, help="simulated studies per regime and hypothesis"
    )
    args = parser.parse_args()
    for name, regime in REGIMES.items():
        n_pos, n_normal, n_other, seeds, seed_sd, per_patient, rho = regime
        rng = np.random.default_rng(12345 + sum(regime[:4]))
        truth = nested_truth(n_normal, n_other, KNOWN_SHIFT, seed_sd)
        rejected = covered = 0
        for _ in range(args.studies):
            null = nested_sets(
                rng, n_pos, n_normal, n_other, seeds, null_shift(seed_sd), seed_sd, per_patient, rho
            )
            rejected += auroc_set_difference(*null)["p"] < 0.05
            known = nested_sets(rng, n_pos, n_normal, n_other, seeds, KNOWN_SHIFT, seed_sd, per_patient, rho)
            low, high = auroc_set_difference(*known)["delta_auroc_ci"]
            covered += low <= truth <= high
        fpr, coverage = rejected / args.studies, covered / args.studies
        print(
            f"{name}: false-positive rate {fpr:.3f} (MC se {np.sqrt(fpr * (1 - fpr) / args.studies):.3f}), "
            f"coverage {coverage:.3f} (MC se {np.sqrt(coverage * (1 - coverage) / args.studies):.3f}); "
            f"{args.studies} studies",
            flush=True,
        )


if __name__ == "__main__":
    main()
