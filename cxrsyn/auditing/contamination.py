"""Part 1, contamination: is an audited image a near-copy of a reference (test) image?

Two methods, each with its own calibrated threshold:

- ``pixels``: normalized correlation of downsampled grayscale images. A coarse descriptor with crop/shift
  variants finds each audited image's ``candidates`` most similar references (exact chunked search), then
  each candidate pair is aligned precisely (the audited image's window moved edge by edge) and compared with
  a finer, high-passed descriptor: the similarity is that correlation (see ``descriptors``).
- ``embedding``: cosine similarity of model embeddings, centred on the reference set's mean embedding.

Threshold rule, per reference set and method: the order-statistic rule of ``thresholds`` for a stated
per-image false-positive rate (``false_positive_rate``), calibrated on the nearest-neighbour statistics of
``calibration_n`` sampled reference images against the other reference images of *different patients*,
computed by the very procedure that scores audited images. An audited image above it is more similar to a
reference image than all but a stated share of real patients are to each other: flagged. A clean audited
image is flagged with probability at most that rate, so ``expected_false_flags`` = n audited x the rate
achieved is reported beside the flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from cxrsyn.auditing.descriptors import CorrelationDescriptor, nearest, refine
from cxrsyn.auditing.sets import Features, ImageSet
from cxrsyn.auditing.thresholds import order_statistic_threshold
from cxrsyn.core.compose import settings_as

METHODS = ("pixels", "embedding")


@dataclass(frozen=True)
class ContaminationSettings:
    """The ``contamination`` block of ``conf/audit.yaml`` (which says what each entry does), with its
    ``coarse`` and ``fine`` entries built into the two descriptors."""

    methods: Sequence[str]
    false_positive_rate: float
    calibration_n: int
    candidates: int
    n_show: int
    coarse: CorrelationDescriptor = CorrelationDescriptor()
    fine: CorrelationDescriptor = CorrelationDescriptor(margins=(0.0,))
    enabled: bool = True
    extra_references: Mapping[str, str] | None = field(default_factory=dict)
    cache_dir: str | None = None
    write_exclude_file: bool = True

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ContaminationSettings:
        coarse = dict(section.get("coarse") or {})
        if "margins" in coarse:
            coarse["margins"] = tuple(coarse["margins"])
        descriptors = {
            "coarse": CorrelationDescriptor(**coarse),
            "fine": CorrelationDescriptor(**(section.get("fine") or {}), margins=(0.0,)),
        }
        return settings_as(cls, {**section, **descriptors}, "contamination")


@dataclass
class Matches:
    similarity: np.ndarray  # (Q,) best similarity
    index: np.ndarray  # (Q,) reference row of the best match
    second: np.ndarray | None = None  # (Q,) best similarity to another patient than the best match's

    @property
    def distinctiveness(self) -> np.ndarray:
        """(1 - second) / (1 - best): how much closer the best match is than anyone else (a copy: far)."""
        return (1.0 - self.second) / np.maximum(1.0 - self.similarity, 1e-6)


def pixel_matches(
    queries: torch.Tensor,
    references: Features,
    coarse: CorrelationDescriptor,
    fine: CorrelationDescriptor,
    candidates: int,
    patients: np.ndarray,
    exclude: np.ndarray | None = None,
    desc: str = "",
) -> Matches:
    """Best aligned fine correlation of each query image (Q, 1, S, S) among its coarse candidates, and the
    best among candidates of other patients than the best match's."""
    return pixel_matches_many(queries, [references], coarse, fine, candidates, [patients], [exclude], desc)[0]


def pixel_matches_many(
    queries: torch.Tensor,
    references: Sequence[Features],
    coarse: CorrelationDescriptor,
    fine: CorrelationDescriptor,
    candidates: int,
    patients: Sequence[np.ndarray],
    exclude: Sequence[np.ndarray | None],
    desc: str = "",
    batch: int = 32,
) -> list[Matches]:
    """``pixel_matches`` against several reference sets, computing each query's variants once."""
    windows = torch.from_numpy(coarse.windows())
    state = []
    for features in references:
        k = min(candidates, len(features.coarse))
        state.append(
            (
                torch.from_numpy(features.coarse),
                torch.from_numpy(features.fine),
                k,
                np.full((len(queries), k), -np.inf),
                np.full((len(queries), k), -1),
            )
        )
    starts = range(0, len(queries), batch)
    for start in tqdm(
        starts, desc=desc or "pixel search", unit="batch", leave=False, disable=len(starts) < 4
    ):
        rows = slice(start, start + batch)
        variants = coarse.compute(queries[rows])
        prepared = fine.prepare(queries[rows])
        for (ref_coarse, ref_fine, k, scores, rows_of), skip in zip(state, exclude, strict=True):
            _, index = nearest(variants, ref_coarse, k=k, exclude=None if skip is None else skip[rows])
            safe = np.maximum(index, 0)
            # each candidate pair starts from its best coarse variant
            first = torch.einsum("qvd,qkd->qkv", variants, ref_coarse[safe]).argmax(dim=2).numpy()
            query_rows, slots = np.nonzero(index >= 0)
            if not len(query_rows):
                continue
            ref_rows = index[query_rows, slots]
            similarity, _ = refine(
                fine, prepared, query_rows, ref_fine[ref_rows], windows[first[query_rows, slots]]
            )
            scores[start + query_rows, slots] = similarity.numpy()
            rows_of[start + query_rows, slots] = ref_rows
    results = []
    for (_, _, _, scores, rows_of), ref_patients in zip(state, patients, strict=True):
        order = np.argsort(-scores, axis=1)
        best = scores[np.arange(len(queries)), order[:, 0]]
        best_index = rows_of[np.arange(len(queries)), order[:, 0]]
        other = (ref_patients[rows_of] != ref_patients[best_index][:, None]) & (rows_of >= 0)
        second = np.where(other, scores, -np.inf).max(axis=1)
        results.append(Matches(best, best_index, second))
    return results


def centred_unit(embeddings: np.ndarray, centre: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(embeddings - centre).float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def embedding_matches(
    queries: np.ndarray, references: np.ndarray, centre: np.ndarray, exclude: np.ndarray | None = None
) -> Matches:
    similarity, index = nearest(
        centred_unit(queries, centre), centred_unit(references, centre), k=1, exclude=exclude
    )
    return Matches(similarity[:, 0], index[:, 0])


def _summary(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return {}
    quantiles = np.quantile(values, [0.0, 0.5, 0.9, 0.99, 1.0])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        **{name: float(v) for name, v in zip(("min", "median", "q90", "q99", "max"), quantiles, strict=True)},
    }


def calibration_values(
    reference: ImageSet,
    reference_features: Features,
    calibration_images: torch.Tensor,
    calibration_rows: np.ndarray,
    settings: ContaminationSettings,
) -> dict[str, np.ndarray]:
    """Each method's statistic for ``calibration_rows`` of the reference set (their decoded images), each
    searched against the reference images of *other patients* by the procedure that scores audited images:
    the clean values the thresholds are calibrated on. They depend on the reference set, the descriptors,
    the model and the rows only, so ``run`` caches them beside the reference features."""
    patients = reference.patients
    exclude = patients[calibration_rows][:, None] == patients[None, :]  # same patient (and the image itself)
    values = {}
    if "pixels" in settings.methods:
        matches = pixel_matches(
            calibration_images,
            reference_features,
            settings.coarse,
            settings.fine,
            int(settings.candidates),
            patients,
            exclude,
            desc=f"{reference.name}: calibration",
        )
        values["pixels"] = _statistic(matches, "pixels")
    if "embedding" in settings.methods:
        centre = reference_features.embeddings.mean(axis=0)
        matches = embedding_matches(
            reference_features.embeddings[calibration_rows], reference_features.embeddings, centre, exclude
        )
        values["embedding"] = _statistic(matches, "embedding")
    return values


def audit_reference(
    audited: ImageSet,
    audited_pixels: Matches,
    audited_features: Features,
    reference: ImageSet,
    reference_features: Features,
    calibration: Mapping[str, np.ndarray],
    settings: ContaminationSettings,
) -> dict[str, Any]:
    """Calibrated thresholds and flags of every audited image against one reference set (``audited_pixels``:
    the audited images' pixel matches in it, from ``pixel_matches_many``; ``calibration``: each method's
    clean values, from ``calibration_values``)."""
    centre = reference_features.embeddings.mean(axis=0)
    rate = float(settings.false_positive_rate)
    methods: dict[str, Any] = {}
    matches = {
        "pixels": audited_pixels,
        "embedding": embedding_matches(audited_features.embeddings, reference_features.embeddings, centre),
    }
    flagged = []
    for method, audit_match in matches.items():
        if method not in settings.methods:
            continue
        statistic = STATISTICS[method]
        audit_values, within = _statistic(audit_match, method), np.asarray(calibration[method])
        calibrated = order_statistic_threshold(within, rate, name=f"{reference.name} {method}")
        threshold = calibrated.pop("threshold")
        within = within[np.isfinite(within)]
        hits = np.flatnonzero(audit_values > threshold)
        methods[method] = {
            "statistic": statistic,
            "threshold": threshold if np.isfinite(threshold) else None,  # None: no calibration, no flags
            "rule": (
                f"{statistic} {calibrated.pop('rule')}; calibration: {calibrated['n']} sampled "
                f"{reference.name} images against the {reference.name} images of other patients"
            ),
            "calibration": calibrated,
            "n_audited": int(len(audit_values)),
            "expected_false_flags": len(audit_values) * (calibrated["achieved_rate"] or 0.0),
            "within_reference": _summary(within),
            "audited": _summary(audit_values),
            "audited_similarity": _summary(audit_match.similarity),
            "n_flagged": int(len(hits)),
        }
        for row in hits:
            match = int(audit_match.index[row])
            flagged.append(
                {
                    "path": str(audited.table["path"].iloc[row]),
                    "test_set": reference.name,
                    "match_path": str(reference.table["path"].iloc[match]),
                    "similarity": float(audit_match.similarity[row]),
                    "method": method,
                    "statistic": statistic,
                    "value": float(audit_values[row]),
                    "threshold": threshold,
                    "_row": int(row),
                    "_match_row": match,
                }
            )
    return {"methods": methods, "flagged": flagged}


STATISTICS = {
    "pixels": "distinctiveness (1 - second) / (1 - best) of the aligned correlation",
    "embedding": "cosine similarity of centred embeddings",
}


def _statistic(matches: Matches, method: str) -> np.ndarray:
    return matches.distinctiveness if method == "pixels" else matches.similarity


def pairs_figure(pairs: list[tuple[np.ndarray, np.ndarray, str]], title: str) -> Figure:
    """Audited image beside its reference match, one row per pair."""
    rows = max(1, len(pairs))
    figure = Figure(figsize=(4.2, 2.1 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, 2, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if not pairs:
        axes[0, 0].text(
            0.5, 0.5, "no flagged pairs", ha="center", va="center", transform=axes[0, 0].transAxes
        )
        axes[0, 1].set_visible(False)
    for row, (audited, reference, caption) in enumerate(pairs):
        axes[row, 0].imshow(audited, cmap="gray", vmin=0, vmax=1)
        axes[row, 1].imshow(reference, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(caption, fontsize=7, loc="left")
    figure.suptitle(title, fontsize=9)
    return figure
