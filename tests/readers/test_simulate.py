"""The simulated readers and, through them, the MRMC intervals and tests: coverage and false-positive rate
by seeded simulation with known truth (the fuller version: benchmarks/reader_study_coverage.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrsyn.readers.mrmc import accuracy_jackknife, auroc_jackknife, obuchowski_rockette
from cxrsyn.readers.simulate import (
    ReaderModel,
    answers_from_latent,
    latent,
    population_accuracy,
    population_auroc,
    rating,
)

CASES_PER_CLASS = 50


def simulate_studies(model: ReaderModel, replications: int, seed: int) -> dict[str, np.ndarray]:
    """OR-Hillis results of ``replications`` simulated studies (origin question)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], CASES_PER_CLASS)
    out = {"auroc_ci": [], "auroc_p": [], "accuracy_ci": []}
    for _ in range(replications):
        positive, confidence = answers_from_latent(
            latent(model, truth, model.origin_separation, rng), model.confidence_step
        )
        foms, left_out = auroc_jackknife(rating(positive, confidence), truth)
        single = obuchowski_rockette(foms, left_out)["single"]["0"]
        out["auroc_ci"].append(single["ci"])
        out["auroc_p"].append(single["p_value"])
        accuracy, dropped = accuracy_jackknife(positive == truth.astype(bool))
        out["accuracy_ci"].append(obuchowski_rockette(accuracy, dropped)["single"]["0"]["ci"])
    return {name: np.array(values) for name, values in out.items()}


def test_population_auroc_equals_a_large_simulation():
    model = ReaderModel(readers=200)
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 2500)
    aurocs, accuracies = [], []
    for _ in range(4):  # fresh cases each time: the case effects average out
        positive, confidence = answers_from_latent(latent(model, truth, 1.0, rng), model.confidence_step)
        scores = rating(positive, confidence)
        aurocs += [roc_auc_score(truth, row) for row in scores]
        accuracies.append((positive == truth.astype(bool)).mean())
    assert np.mean(aurocs) == pytest.approx(population_auroc(model, "origin"), abs=0.005)
    assert np.mean(accuracies) == pytest.approx(population_accuracy(model, "origin"), abs=0.005)
    assert population_auroc(ReaderModel(origin_separation=0.0), "origin") == pytest.approx(0.5, abs=1e-12)
    assert population_auroc(model, "pneumonia", "real") > population_auroc(model, "pneumonia", "synthetic")


def test_or_hillis_intervals_cover_the_reader_averaged_auroc_and_accuracy():
    model = ReaderModel(readers=5, origin_separation=1.0)
    studies = simulate_studies(model, replications=600, seed=1)
    auroc, accuracy = population_auroc(model, "origin"), population_accuracy(model, "origin")
    auroc_coverage = np.mean((studies["auroc_ci"][:, 0] <= auroc) & (auroc <= studies["auroc_ci"][:, 1]))
    accuracy_coverage = np.mean(
        (studies["accuracy_ci"][:, 0] <= accuracy) & (accuracy <= studies["accuracy_ci"][:, 1])
    )
    # 600 replications: a 95% interval's coverage lands in [0.925, 0.97] with probability > 0.99
    assert 0.925 <= auroc_coverage <= 0.975, auroc_coverage
    assert 0.925 <= accuracy_coverage <= 0.975, accuracy_coverage


def test_or_hillis_test_of_chance_holds_its_level():
    """Readers who cannot tell synthetic from real (separation 0): AUROC = 0.5 is rejected about 5% of the time."""
    studies = simulate_studies(ReaderModel(readers=5, origin_separation=0.0), replications=600, seed=2)
    assert 0.025 <= np.mean(studies["auroc_p"] < 0.05) <= 0.075
