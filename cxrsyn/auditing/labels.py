"""Part 2, label fidelity: does a pretrained chest X-ray classifier (the auditor) agree with the prompt labels?

Per prompt class the auditor's scores for ``classes`` (Pneumonia, Consolidation, Lung Opacity); per auditor
class its AUROC against the prompt labels with a stratified bootstrap CI; and every image whose score
contradicts its label: ``contradiction`` = the ``score_class`` score for a normal-labelled image, 1 - score for
a pneumonia-labelled one. Above 0.5 the auditor's operating point lies on the other side of the label; these
are listed, most contradicting first.

The same auditor on each real reference set (``reference_label_audit``: a seeded sample of up to
``reference_n`` of its images, real labels) gives the yardstick: its AUROC (patient-clustered bootstrap CI)
and contradiction rate there are what the audited set's numbers are read against. An auditor that reaches
AUROC 0.75 on real radiographs cannot be expected to reach 0.95 on generated ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.evaluation.metrics import auroc
from cxrsyn.evaluation.statistics import bootstrap_ci

CONTRADICTION_COLUMN = "contradiction"


@dataclass(frozen=True)
class LabelAuditSettings:
    """The ``label_audit`` block of ``conf/audit.yaml`` (which says what each entry does)."""

    classes: Sequence[str]
    score_class: str
    n_show: int
    enabled: bool = True
    n_resamples: int | None = None  # bootstrap of the AUROC CI (0 or None: none)
    alpha: float = 0.05
    n_list: int = 50
    reference_n: int | None = 1000  # images of each reference set the auditor also scores (None: all)


def auditor_scores(auditor: Any, images: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """The auditor's scores of ``classes`` for every image, one column per class."""
    missing = [name for name in classes if name not in auditor.pathologies]
    if missing:
        known = [name for name in auditor.pathologies if name]
        raise CxrsynError(
            f"label_audit.classes {missing} are not outputs of the auditor; it has {', '.join(known)}"
        )
    batch = getattr(auditor, "batch_size", 32)
    parts = []
    for start in tqdm(range(0, len(images), batch), desc="label audit: auditor scores", unit="batch"):
        parts.append(auditor.scores(images[start : start + batch]))
    scores = torch.cat(parts).numpy().astype(np.float64)
    return pd.DataFrame({name: scores[:, auditor.pathologies.index(name)] for name in classes})


def label_audit(
    table: pd.DataFrame, scores: pd.DataFrame, settings: LabelAuditSettings, seed: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Results for ``audit.json`` and the per-image table (path, label, scores, contradiction, rank)."""
    labels = table["label"].to_numpy().astype(int)
    score_class = settings.score_class
    if score_class not in scores.columns:
        raise CxrsynError(f"label_audit.score_class={score_class!r} must be one of label_audit.classes")
    per_class: dict[str, Any] = {}
    for label, name in ((1, "pneumonia"), (0, "normal")):
        rows = labels == label
        per_class[name] = {
            "n": int(rows.sum()),
            **{
                column: {
                    "mean": float(scores[column][rows].mean()) if rows.any() else None,
                    "median": float(scores[column][rows].median()) if rows.any() else None,
                    "share_above_operating_point": float((scores[column][rows] >= 0.5).mean())
                    if rows.any()
                    else None,
                }
                for column in scores.columns
            },
        }
    both = len(np.unique(labels)) == 2
    aurocs = {}
    for column in scores.columns:
        values = scores[column].to_numpy()
        result: dict[str, Any] = {"auroc": auroc(labels, values) if both else None}
        if both and settings.n_resamples:
            ci = bootstrap_ci(labels, values, int(settings.n_resamples), seed, float(settings.alpha))
            result["auroc_ci"] = ci["auroc_ci"]
        aurocs[column] = result
    contradicts = contradiction(labels, scores[score_class].to_numpy())
    per_image = pd.concat(
        [table[["path", "label"]].reset_index(drop=True), scores.reset_index(drop=True)], axis=1
    )
    per_image[CONTRADICTION_COLUMN] = contradicts
    order = np.argsort(-contradicts, kind="stable")
    per_image["rank"] = np.empty(len(order), int)
    per_image.loc[order, "rank"] = np.arange(1, len(order) + 1)
    per_image = per_image.sort_values("rank").reset_index(drop=True)
    contradicting = per_image[per_image[CONTRADICTION_COLUMN] > 0.5]
    n_list = int(settings.n_list)
    result = {
        "classes": list(scores.columns),
        "score_class": score_class,
        "scores_by_prompt_class": per_class,
        "auroc_vs_prompt_labels": aurocs,
        "rule": (
            f"contradiction = {score_class} score for normal-labelled images, 1 - score for pneumonia-labelled "
            "ones; above 0.5 the auditor's operating point lies on the other side of the label"
        ),
        "n_contradicting": int(len(contradicting)),
        "contradiction_rate": float(len(contradicting) / len(per_image)) if len(per_image) else None,
        "contradicting": [
            {
                "path": str(row["path"]),
                "label": int(row["label"]),
                "score": float(row[score_class]),
                CONTRADICTION_COLUMN: float(row[CONTRADICTION_COLUMN]),
            }
            for _, row in contradicting.head(n_list).iterrows()
        ],
    }
    return result, per_image


def contradiction(labels: np.ndarray, score: np.ndarray) -> np.ndarray:
    """How far the auditor's score sits on the other side of each label (above 0.5: it contradicts it)."""
    return np.where(np.asarray(labels) == 1, 1.0 - score, score)


def reference_label_audit(
    labels: np.ndarray,
    scores: pd.DataFrame,
    settings: LabelAuditSettings,
    seed: int,
    patients: np.ndarray | None = None,
) -> dict[str, Any]:
    """The auditor against a real reference set's own labels: per auditor class its AUROC with the
    patient-clustered bootstrap CI, and the ``score_class`` contradiction rate (the share of images above 0.5
    by the rule of ``label_audit``)."""
    labels = np.asarray(labels).astype(int)
    score_class = settings.score_class
    both = len(np.unique(labels)) == 2
    aurocs: dict[str, Any] = {}
    for column in scores.columns:
        values = scores[column].to_numpy()
        result: dict[str, Any] = {"auroc": auroc(labels, values) if both else None}
        if both and settings.n_resamples:
            ci = bootstrap_ci(
                labels, values, int(settings.n_resamples), seed, float(settings.alpha), patients=patients
            )
            result["auroc_ci"] = ci["auroc_ci"]
            result["ci_method"] = ci["ci_method"]
        aurocs[column] = result
    contradicting = contradiction(labels, scores[score_class].to_numpy()) > 0.5
    return {
        "n": int(labels.size),
        "n_pos": int(labels.sum()),
        "n_patients": int(len(pd.unique(patients))) if patients is not None else int(labels.size),
        "auroc_vs_labels": aurocs,
        "n_contradicting": int(contradicting.sum()),
        "contradiction_rate": float(contradicting.mean()) if labels.size else None,
    }


def reference_sample(n_images: int, reference_n: int | None, seed: int) -> np.ndarray:
    """Rows of a reference set the label audit scores: all, or a seeded sample of ``reference_n`` (sorted)."""
    if reference_n is None or reference_n >= n_images:
        return np.arange(n_images)
    return np.sort(np.random.default_rng([seed, 0x1ABE1]).choice(n_images, int(reference_n), replace=False))


def grid_figure(images: list[np.ndarray], captions: list[str], title: str, columns: int = 8) -> Figure:
    n = max(1, len(images))
    columns = min(columns, n)
    rows = -(-n // columns)
    figure = Figure(figsize=(1.6 * columns + 0.4, 1.8 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)
    if not images:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.set_visible(True)
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure
