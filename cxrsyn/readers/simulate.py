"""Simulated readers: answer files from a stated reader model, so a study can be scored end to end on the
phantom and the analysis's intervals can be checked for coverage.

The model (a binormal latent-variable model with reader and case random effects, as in Roe and Metz 1997):
for question q (``origin``: truth 1 = synthetic; ``pneumonia``: truth 1 = label 1), reader r and case c,

    z = (d_q + reader_sd * u_r) * truth_c + case_sd * v_c + noise_sd * e_rc - d_q / 2 - bias_sd * b_r

with u, v, e, b independent standard normals (v drawn per case and question). The answer is positive
(synthetic, pneumonia present) when z > 0; its confidence is ``min(5, 1 + floor(|z| / confidence_step))``.
``d_origin`` is ``origin_separation``; the pneumonia separation is ``pneumonia_separation_real`` on real cases
and ``pneumonia_separation_synthetic`` on synthetic ones (readers see pneumonia less well in synthetic images
when it is smaller). ``population_auroc`` gives the reader-averaged population AUROC of the ratings exactly
(quadrature): the value the MRMC interval should cover.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from scipy.stats import norm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import write_json
from cxrsyn.readers.order import reader_order


@dataclass(frozen=True)
class ReaderModel:
    readers: int = 5
    seed: int = 0
    origin_separation: float = 1.0
    pneumonia_separation_real: float = 2.0
    pneumonia_separation_synthetic: float = 1.0
    reader_sd: float = 0.3
    case_sd: float = 0.7
    noise_sd: float = 0.7
    bias_sd: float = 0.3
    confidence_step: float = 0.5

    @classmethod
    def from_arguments(cls, arguments: list[str]) -> ReaderModel:
        """From ``key=value`` words (``readers=5 seed=0 origin_separation=1.2``)."""
        known = {field.name: field.type for field in fields(cls)}
        values: dict[str, Any] = {}
        for word in arguments:
            key, _, value = word.partition("=")
            if key not in known or not value:
                raise CxrsynError(
                    f"--simulate {word!r}: use key=value with keys {', '.join(known)} (e.g. readers=5)"
                )
            try:
                values[key] = int(value) if key in ("readers", "seed") else float(value)
            except ValueError:
                raise CxrsynError(f"--simulate {word!r}: {value!r} is not a number") from None
        model = cls(**values)
        if model.readers < 1:
            raise CxrsynError(f"--simulate readers={model.readers}: use at least one reader")
        return model


def latent(
    model: ReaderModel, truth: np.ndarray, separation: np.ndarray | float, rng: np.random.Generator
) -> np.ndarray:
    """readers x cases latent values z (module docstring) for one question."""
    truth = np.asarray(truth, np.float64)
    separation = np.broadcast_to(np.asarray(separation, np.float64), truth.shape)
    readers, cases = model.readers, len(truth)
    skill = model.reader_sd * rng.standard_normal((readers, 1))
    bias = model.bias_sd * rng.standard_normal((readers, 1))
    case = model.case_sd * rng.standard_normal((1, cases))
    noise = model.noise_sd * rng.standard_normal((readers, cases))
    return (separation + skill) * truth + case + noise - separation / 2 - bias


def answers_from_latent(z: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Positive answer (bool) and confidence 1-5 from latent values."""
    confidence = np.minimum(5, 1 + np.floor(np.abs(z) / step)).astype(int)
    return z > 0, confidence


def rating(positive: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The 10-point scale of one question: 6..10 for a positive answer (confidence 1..5), 1..5 for a
    negative one (confidence 5..1). Higher = more sure it is positive."""
    return np.where(positive, 5 + confidence, 6 - confidence)


def population_auroc(model: ReaderModel, question: str, source: str | None = None, nodes: int = 40) -> float:
    """The reader-averaged population AUROC of the 10-point ratings for ``question`` (origin, or pneumonia on
    ``source`` cases): what the MRMC interval estimates. Exact for each reader (given its skill u and bias b a
    case's latent value is normal with variance case_sd^2 + noise_sd^2 in each class, cut into the ten rating
    categories at multiples of ``confidence_step``; ties count half), averaged over readers by Gauss-Hermite
    quadrature over u and b."""
    weight, skill, shift, spread = _reader_quadrature(model, question, source, nodes)
    edges = np.concatenate([[-np.inf], model.confidence_step * np.arange(-4, 5), [np.inf]])

    def categories(mean: np.ndarray) -> np.ndarray:  # readers x 10 rating probabilities
        return np.diff(norm.cdf((edges[None, :] - mean[:, None]) / spread), axis=1)

    positive, negative = categories(shift + skill), categories(shift)
    below = np.cumsum(negative, axis=1) - negative  # P(negative rating < k)
    aurocs = (positive * (below + 0.5 * negative)).sum(axis=1)
    return float(weight @ aurocs)


def population_accuracy(
    model: ReaderModel, question: str, source: str | None = None, nodes: int = 40
) -> float:
    """The reader-averaged population share of correct answers (positive answer when z > 0) with as many
    positive as negative cases, as ``population_auroc`` computes it."""
    weight, skill, shift, spread = _reader_quadrature(model, question, source, nodes)
    correct = 0.5 * norm.sf(-(shift + skill) / spread) + 0.5 * norm.cdf(-shift / spread)
    return float(weight @ correct)


def _reader_quadrature(
    model: ReaderModel, question: str, source: str | None, nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Gauss-Hermite nodes over readers' skill u and bias b: weights, each node's separation and shift of the
    latent mean, and the latent SD within a class."""
    if question == "origin":
        separation = model.origin_separation
    else:
        separation = (
            model.pneumonia_separation_real if source == "real" else model.pneumonia_separation_synthetic
        )
    points, weights = hermegauss(nodes)
    weights = weights / weights.sum()
    u, b = np.meshgrid(points, points, indexing="ij")
    skill = (separation + model.reader_sd * u).ravel()
    shift = (-separation / 2 - model.bias_sd * b).ravel()
    return np.outer(weights, weights).ravel(), skill, shift, float(np.hypot(model.case_sd, model.noise_sd))


def simulate_ratings(model: ReaderModel, key: pd.DataFrame) -> dict[str, np.ndarray]:
    """Answers of ``model.readers`` simulated readers to every case of ``key`` (columns ``source``, ``label``):
    readers x cases arrays ``origin`` (bool: synthetic), ``origin_confidence``, ``pneumonia`` (bool),
    ``pneumonia_confidence``."""
    rng = np.random.default_rng(model.seed)
    synthetic = (key["source"] == "synthetic").to_numpy()
    origin, origin_confidence = answers_from_latent(
        latent(model, synthetic, model.origin_separation, rng), model.confidence_step
    )
    separation = np.where(synthetic, model.pneumonia_separation_synthetic, model.pneumonia_separation_real)
    pneumonia, pneumonia_confidence = answers_from_latent(
        latent(model, key["label"].to_numpy(), separation, rng), model.confidence_step
    )
    return {
        "origin": origin,
        "origin_confidence": origin_confidence,
        "pneumonia": pneumonia,
        "pneumonia_confidence": pneumonia_confidence,
    }


def answer_document(
    study: dict[str, Any], reader: str, order: list[str], answers: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    """An answer file in the page's export format (``answers`` in the reader's order; complete when every
    case of ``order`` is answered); ``fields`` add to it or replace what it says."""
    return {
        "format": "cxrsyn-reader-answers",
        "version": 1,
        "study": study["study"],
        "seed": study["seed"],
        "reader": reader,
        "order": order,
        "n_cases": len(order),
        "complete": len(answers) == len(order),
        "answers": answers,
        **fields,
    }


def write_answer_files(
    model: ReaderModel, study: dict[str, Any], key: pd.DataFrame, out_dir: Path
) -> list[Path]:
    """One answer file per simulated reader (``sim01``, ``sim02``, ...), in the page's export format, each in
    the order the page would show that reader."""
    out_dir.mkdir(parents=True, exist_ok=True)
    simulated = simulate_ratings(model, key)
    ids = key["id"].tolist()
    column = {case_id: i for i, case_id in enumerate(ids)}
    files = []
    for r in range(model.readers):
        reader = f"sim{r + 1:02d}"
        order = reader_order(sorted(ids), int(study["seed"]), reader)
        answers = []
        for position, case_id in enumerate(order, start=1):
            c = column[case_id]
            answers.append(
                {
                    "case": case_id,
                    "position": position,
                    "origin": "synthetic" if simulated["origin"][r, c] else "real",
                    "origin_confidence": int(simulated["origin_confidence"][r, c]),
                    "pneumonia": "yes" if simulated["pneumonia"][r, c] else "no",
                    "pneumonia_confidence": int(simulated["pneumonia_confidence"][r, c]),
                    "comment": "",
                    "seconds": 0.0,
                }
            )
        document = answer_document(
            study,
            reader,
            order,
            answers,
            exported_at=datetime.now(timezone.utc).isoformat(),
            simulated=asdict(model),
        )
        path = out_dir / f"answers-{reader}-{study['study']}.json"
        write_json(path, document)
        files.append(path)
    return files
