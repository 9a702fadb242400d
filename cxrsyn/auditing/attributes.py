"""Attribute fidelity: does each image show the patient it was asked for?

For every prompted attribute that a reader (``cxrsyn.auditing.readers``) can read (sex, age band,
projection; and the class, read by the label auditor at its operating point), the audited images' prompted
values against what the reader sees: a confusion table, the observed agreement with its Wilson CI and Cohen's
kappa with its large-sample CI (``cxrsyn.evaluation.agreement``).

A **prompt cell** is one prompted value of one attribute (e.g. projection "AP supine"). Its agreement is the
share of its images read as asked. **Rule**: a cell is flagged as ignored by the generator when the exact
one-sided binomial test rejects "agreement >= ``threshold``" (default 0.5: at least half its images show
what was asked), with Holm's adjustment over every cell tested in the audit (family-wise ``alpha``).

A reader is imperfect: even a faithful generator's cells agree only as often as the reader is right. So the
reader is checked where the truth is known: on up to ``validation_n`` images of each reference set that
records the attribute (a column of the same name, or RSNA's ``view`` for projection; sex ``F``/``M``; age in
years). A cell whose reader recall there is below ``min_reader_recall`` is reported but not tested (the reader,
not the generator, would decide it); a reader no reference set can check is tested and marked unvalidated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrsyn.auditing.readers import years_to_band
from cxrsyn.auditing.sets import ImageSet, decode_rows
from cxrsyn.evaluation.agreement import CLOPPER_PEARSON, agreement, agreement_below, holm, proportion_ci

LABEL_ATTRIBUTE = "class"  # the label, read by the label auditor (pneumonia / normal)
REFERENCE_COLUMNS = {"projection": ("projection", "view"), "sex": ("sex",), "age_band": ("age", "age_band")}
VALUE_ALIASES = {"sex": {"F": "female", "M": "male", "Female": "female", "Male": "male"}}


@dataclass(frozen=True)
class AttributeSettings:
    """The ``attributes`` block of ``conf/audit.yaml`` (which says what each entry does)."""

    enabled: bool = True
    threshold: float = 0.5
    alpha: float = 0.05
    min_reader_recall: float = 0.7
    validation_n: int = 200
    label: bool = True
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def rule(settings: AttributeSettings) -> str:
    return (
        f"a prompt cell is flagged when the exact one-sided binomial test rejects agreement >= "
        f"{settings.threshold} (Holm-adjusted over every cell tested, family-wise alpha {settings.alpha}); "
        f"cells whose reader recall on reference images of known value is below {settings.min_reader_recall} "
        "are not tested"
    )


def read_values(reader: Any, images: torch.Tensor, bands: Sequence[str]) -> list[str]:
    """What ``reader`` reads in each image, as classes (ages in years become the band that holds them)."""
    values = reader.read(images)
    if getattr(reader, "output", "classes") == "years":
        return [years_to_band(float(value), list(bands)) for value in values]
    return [str(value) for value in values]


def attribute_fidelity(
    audited: ImageSet,
    images: torch.Tensor,
    readers: Mapping[str, Any],
    skipped: Mapping[str, str],
    references: Sequence[ImageSet],
    settings: AttributeSettings,
    seed: int,
    label_scores: np.ndarray | None = None,
    workers: Any = None,
) -> dict[str, Any]:
    """Every readable attribute's agreement and cells, the flagged cells, and what was skipped and why."""
    table = audited.table.reset_index(drop=True)
    result: dict[str, Any] = {
        "rule": rule(settings),
        "threshold": settings.threshold,
        "alpha": settings.alpha,
        "by_attribute": {},
        "skipped": dict(skipped),
    }
    for attribute, reader in readers.items():
        if attribute not in table.columns:
            result["skipped"][attribute] = (
                f"the audited set's manifest has no {attribute!r} column (nothing was asked for it)"
            )
            continue
        extra = (settings.value_maps or {}).get(attribute) or {}
        reader.value_map = {**reader.value_map, **{str(k): str(v) for k, v in extra.items()}}
        prompted = table[attribute].astype(str).tolist()
        bands = sorted(set(prompted), key=_band_key) if attribute == "age_band" else []
        read = read_values(reader, images, bands)
        asked = [reader.class_of(value) for value in prompted]
        validation = _validate(reader, attribute, bands, references, settings, seed, workers)
        result["by_attribute"][attribute] = _summarise(
            attribute, prompted, asked, read, reader, validation, settings
        )
    if settings.label and label_scores is not None:
        prompted = ["pneumonia" if label == 1 else "normal" for label in audited.labels]
        read = ["pneumonia" if score >= 0.5 else "normal" for score in label_scores]
        result["by_attribute"][LABEL_ATTRIBUTE] = _summarise(
            LABEL_ATTRIBUTE, prompted, prompted, read, None, {}, settings
        )
    _flag(result, settings)
    return result


def _band_key(band: str) -> float:
    head = str(band).split("-")[0].rstrip("+")
    return float(head) if head.replace(".", "", 1).isdigit() else float("inf")


def _summarise(
    attribute: str,
    prompted: list[str],
    asked: list[str],
    read: list[str],
    reader: Any,
    validation: dict[str, Any],
    settings: AttributeSettings,
) -> dict[str, Any]:
    classes = list(getattr(reader, "classes", []) or [])
    categories = list(dict.fromkeys([*sorted(set(asked)), *classes, *sorted(set(read))]))
    overall = agreement(asked, read, categories, settings.alpha)
    recall = validation.get("recall_by_class", {})
    cells = []
    for value in sorted(
        set(prompted), key=lambda v: (_band_key(v), v) if attribute == "age_band" else (0, v)
    ):
        rows = [i for i, p in enumerate(prompted) if p == value]
        expected = asked[rows[0]]
        agreeing = sum(read[i] == expected for i in rows)
        reader_recall = recall.get(expected)
        tested = reader_recall is None or reader_recall >= settings.min_reader_recall
        cells.append(
            {
                "value": value,
                "read_as_expected": expected,
                "n": len(rows),
                "agreement": agreeing / len(rows),
                "agreement_ci": proportion_ci(agreeing, len(rows), settings.alpha, "exact"),
                "agreement_ci_method": CLOPPER_PEARSON,
                "read_as": dict(Counter(read[i] for i in rows).most_common()),
                "reader_recall": reader_recall,
                "tested": tested,
                "why_not_tested": None
                if tested
                else f"reader recall {reader_recall:.2f} for {expected!r} on reference images is below "
                f"{settings.min_reader_recall}",
                "p": agreement_below(agreeing, len(rows), settings.threshold) if tested else None,
            }
        )
    return {
        "reader": getattr(reader, "identity", "the label auditor at its operating point (0.5)"),
        "value_map": dict(getattr(reader, "value_map", {}) or {}),
        **overall,
        "validation": validation or {"note": "no reference set records this attribute: reader unvalidated"},
        "cells": cells,
    }


def _flag(result: dict[str, Any], settings: AttributeSettings) -> None:
    tested = [
        (attribute, cell)
        for attribute, entry in result["by_attribute"].items()
        for cell in entry["cells"]
        if cell["tested"]
    ]
    adjusted = holm([cell["p"] for _, cell in tested])
    flagged = []
    for (attribute, cell), p_adjusted in zip(tested, adjusted, strict=True):
        cell["p_adjusted"] = p_adjusted
        cell["flagged"] = p_adjusted < settings.alpha
        if cell["flagged"]:
            flagged.append(
                {
                    "attribute": attribute,
                    "value": cell["value"],
                    "n": cell["n"],
                    "agreement": cell["agreement"],
                    "agreement_ci": cell["agreement_ci"],
                    "read_as": cell["read_as"],
                    "p_adjusted": p_adjusted,
                }
            )
    for entry in result["by_attribute"].values():
        for cell in entry["cells"]:
            cell.setdefault("p_adjusted", None)
            cell.setdefault("flagged", False)
    result["n_cells_tested"] = len(tested)
    result["flagged"] = flagged


def _reference_truth(reference: ImageSet, attribute: str, bands: Sequence[str]) -> pd.Series | None:
    """The attribute's known value per reference image (None where the set does not record it)."""
    table = reference.table
    for column in REFERENCE_COLUMNS.get(attribute, (attribute,)):
        if column not in table.columns:
            continue
        values = table[column]
        if attribute == "age_band" and column == "age":
            years = pd.to_numeric(values, errors="coerce")
            inside = [
                next((band for band in bands if _inside(age, band)), None) if pd.notna(age) else None
                for age in years
            ]
            return pd.Series(inside, index=table.index, dtype=object)
        aliases = VALUE_ALIASES.get(attribute, {})
        return pd.Series(
            [None if pd.isna(v) else aliases.get(str(v), str(v)) for v in values],
            index=table.index,
            dtype=object,
        )
    return None


def _inside(age: float, band: str) -> bool:
    low, _, high = str(band).partition("-")
    try:
        return float(low) <= float(age) <= float(high)
    except ValueError:
        return False


def _validate(
    reader: Any,
    attribute: str,
    bands: Sequence[str],
    references: Sequence[ImageSet],
    settings: AttributeSettings,
    seed: int,
    workers: Any,
) -> dict[str, Any]:
    """The reader's recall per class on up to ``validation_n`` reference images of known value per set."""
    truth_all: list[str] = []
    read_all: list[str] = []
    by_reference: dict[str, Any] = {}
    for reference in references:
        truth = _reference_truth(reference, attribute, bands)
        if truth is None:
            continue
        known = np.flatnonzero(truth.notna().to_numpy())
        if attribute == "age_band" and getattr(reader, "output", "classes") == "classes":
            known = known[[str(truth.iloc[i]) in reader.classes for i in known]]
        if not len(known):
            continue
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(known, min(len(known), int(settings.validation_n)), replace=False))
        images = torch.cat(
            [
                pixels
                for _, pixels in decode_rows(reference, rows, workers, f"{reference.name}: {attribute} check")
            ]
        )
        read = read_values(reader, images, bands)
        expected = [reader.class_of(str(truth.iloc[i])) for i in rows]
        by_reference[reference.name] = {
            "n": len(rows),
            "agreement": float(np.mean([r == e for r, e in zip(read, expected, strict=True)])),
        }
        truth_all += expected
        read_all += read
    if not truth_all:
        return {}
    recall = {
        cls: float(np.mean([r == cls for r, t in zip(read_all, truth_all, strict=True) if t == cls]))
        for cls in sorted(set(truth_all))
    }
    return {"by_reference": by_reference, "recall_by_class": recall, "n": len(truth_all)}
