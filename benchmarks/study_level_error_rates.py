"""Error rates of the study-level comparison, the method the report uses (``study_difference``) beside the
two-level percentile bootstrap it replaced and a Satterthwaite-df variant that was tried and not adopted.

Simulated studies at the level of predictions (``cxrsyn/testing/study_simulation.py``: per-seed score vectors
of two arms on shared test patients, with a seed effect, patient effects and each model's own noise), in four
regimes and at 2, 3, 5 and 10 seeds. Prints, per regime and seed count, the false-positive rate at alpha 0.05
when the recipes are identical (CI excludes 0) and the coverage of a known difference (CI holds it). Not a
speed benchmark: an accuracy one, with a Monte Carlo standard error of about sqrt(0.05 x 0.95 / studies).

    python benchmarks/study_level_error_rates.py                 # 400 studies per cell
    python benchmarks/study_level_error_rates.py --studies 100 --seeds 3    # a quick look
    python benchmarks/study_level_error_rates.py --regimes mixed model-noise   # a part (run parts side by side)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import t as t_dist

from cxrsyn.evaluation.statistics import (
    METRIC_NAMES,
    Clusters,
    _percentiles,
    _resampled_metrics,
    study_difference,
)
from cxrsyn.testing.study_simulation import REGIMES, error_rates

GAP = 0.3  # mu_a - mu_b of the shifted studies: a true AUROC difference of about 0.04


def two_level_percentile_bootstrap(labels, scores_a, scores_b, n_resamples, seed):
    """The previous method (cxrsyn before issue 18), kept here to measure it: each resample draws seeds with
    replacement and one patient resample shared by the drawn seeds; percentile CI of the mean difference."""
    n_seeds = len(scores_a)
    clusters = Clusters.of(labels)
    resampled = _resampled_metrics(labels, [*scores_a, *scores_b], clusters, n_resamples, seed)
    seed_draws = np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(n_seeds, n_resamples))
    result = {}
    for name in METRIC_NAMES:
        diffs = np.stack([resampled[s][name] - resampled[n_seeds + s][name] for s in range(n_seeds)])
        drawn = np.take_along_axis(diffs, seed_draws, axis=0).mean(axis=0)
        result[f"delta_{name}_ci"] = _percentiles(drawn, 0.05)
    return result


def satterthwaite(labels, scores_a, scores_b, n_resamples, seed):
    """The same se as ``study_difference`` with Welch-Satterthwaite df (the patient part taken as known)
    instead of S - 1: tried, too liberal (see docs/protocol.md)."""
    result = study_difference(labels, scores_a, scores_b, n_resamples, seed)
    n_seeds = len(scores_a)
    seed_part = np.var(result["per_seed_delta_auroc"], ddof=1) / n_seeds
    se = result["se_auroc"]
    df = se**4 / (seed_part**2 / (n_seeds - 1)) if seed_part > 0 else np.inf
    half = t_dist.ppf(0.975, df) * se
    return {"delta_auroc_ci": [result["delta_auroc"] - half, result["delta_auroc"] + half]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=400, help="simulated studies per cell")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5, 10])
    parser.add_argument("--regimes", nargs="+", default=[r.name for r in REGIMES], help="a subset, by name")
    parser.add_argument("--resamples", type=int, default=200, help="patient resamples of the new method")
    parser.add_argument("--old-resamples", type=int, default=500, help="of the previous (percentile) one")
    args = parser.parse_args()
    methods = {
        "new": lambda labels, a, b, study: study_difference(labels, a, b, args.resamples, study),
        "previous": lambda labels, a, b, study: two_level_percentile_bootstrap(
            labels, a, b, args.old_resamples, study
        ),
        "satterthwaite": lambda labels, a, b, study: satterthwaite(labels, a, b, args.resamples, study),
    }
    mc_se = np.sqrt(0.05 * 0.95 / args.studies)
    print(
        f"{args.studies} studies per cell, 100 + 100 test patients, alpha 0.05; Monte Carlo se {mc_se:.3f}\n"
        f"false-positive rate (identical recipes) | coverage of the true difference (gap {GAP} in the "
        "binormal mean)"
    )
    print(f"{'regime':18} {'seeds':>5} | " + " | ".join(f"{name:>13} FPR / cover" for name in methods))
    for regime in (r for r in REGIMES if r.name in args.regimes):
        for n_seeds in args.seeds:
            started = time.time()
            cells = []
            for method in methods.values():
                null = error_rates(method, regime, n_seeds, args.studies, seed=1)
                shifted = error_rates(method, regime.with_gap(GAP), n_seeds, args.studies, seed=1)
                cells.append(f"{null['miss_rate']:>19.3f} / {shifted['coverage']:.3f}")
            print(
                f"{regime.name:18} {n_seeds:>5} | "
                + " | ".join(cells)
                + f"   ({time.time() - started:.0f} s)"
            )
    example = REGIMES[0].with_gap(GAP)
    print(f"true AUROC difference under the shift, e.g. {example.name}: {example.true_delta_auroc:.4f}")


if __name__ == "__main__":
    main()
