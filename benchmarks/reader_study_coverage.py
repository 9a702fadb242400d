"""Coverage and false-positive rate of the reader study's pooled intervals and tests, by seeded simulation with
known truth (the suite's tests/readers/test_simulate.py is a fast slice of this).

    python benchmarks/reader_study_coverage.py [--replications 2000] [--seed 0]

For each design (readers x cases per class) and reader model (cxrsyn/readers/simulate.py), simulates studies,
runs the OR-Hillis analysis of the reader-averaged AUROC and accuracy (cxrsyn/readers/mrmc.py) and prints:
the share of 95% intervals covering the population value (exact, by quadrature), and, where the separation is
0, the share of tests of AUROC = 0.5 rejecting at 5%. Also the coverage of Fleiss' kappa's case bootstrap on
its own model (Beta(1, 1) case probabilities, kappa = 1/3). Not a speed benchmark: it prints proportions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cxrsyn.readers.agreement import fleiss_kappa_ci
from cxrsyn.readers.mrmc import accuracy_jackknife, auroc_jackknife, obuchowski_rockette
from cxrsyn.readers.simulate import (
    ReaderModel,
    answers_from_latent,
    latent,
    population_accuracy,
    population_auroc,
    rating,
)


def or_coverage(model: ReaderModel, per_class: int, replications: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], per_class)
    auroc, accuracy = population_auroc(model, "origin"), population_accuracy(model, "origin")
    covered_auroc = covered_accuracy = rejected = 0
    for _ in range(replications):
        positive, confidence = answers_from_latent(
            latent(model, truth, model.origin_separation, rng), model.confidence_step
        )
        single = obuchowski_rockette(*auroc_jackknife(rating(positive, confidence), truth))["single"]["0"]
        covered_auroc += single["ci"][0] <= auroc <= single["ci"][1]
        rejected += single["p_value"] < 0.05
        interval = obuchowski_rockette(*accuracy_jackknife(positive == truth.astype(bool)))["single"]["0"][
            "ci"
        ]
        covered_accuracy += interval[0] <= accuracy <= interval[1]
    return {
        "auroc": auroc,
        "auroc_coverage": covered_auroc / replications,
        "accuracy_coverage": covered_accuracy / replications,
        "rejection_rate": rejected / replications,
    }


def kappa_coverage(cases: int, readers: int, replications: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    covered = 0
    for _ in range(replications):
        yes = rng.binomial(readers, rng.beta(1.0, 1.0, size=cases))
        ci = fleiss_kappa_ci(
            np.stack([yes, readers - yes], axis=1), n_resamples=1000, seed=int(rng.integers(2**31))
        )
        covered += ci["ci"][0] <= 1 / 3 <= ci["ci"][1]
    return covered / replications


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    print(
        "readers  cases/class  separation  population AUROC  AUROC CI coverage  accuracy CI coverage  P(reject 0.5)"
    )
    for readers in (3, 5, 10):
        for per_class in (25, 50, 100):
            for separation in (0.0, 1.0):
                model = ReaderModel(readers=readers, origin_separation=separation)
                result = or_coverage(model, per_class, args.replications, args.seed)
                print(
                    f"{readers:7d}  {per_class:11d}  {separation:10.1f}  {result['auroc']:16.3f}  "
                    f"{result['auroc_coverage']:17.3f}  {result['accuracy_coverage']:20.3f}  "
                    f"{result['rejection_rate']:13.3f}"
                )
    for cases in (50, 100, 200):
        coverage = kappa_coverage(cases, 5, args.replications // 4, args.seed)
        print(f"Fleiss' kappa, 5 readers, {cases} cases: case-bootstrap 95% CI coverage {coverage:.3f}")
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
