"""Choosing which images of a training source are used: a seeded, attribute-stratified subsample
(``max_per_class``, ``max_total``), duplication (``repeat``), and the patient split of a real dataset.

Subsampling, within each class, apportions the images among the strata (the values of the attributes in
``stratify_by``) by Balinski and Young's quota method (1975), seat by seat: the t-th image goes to the
stratum with the largest N_h / (a_h + 1) among those whose count a_h is still below t N_h / N (N_h images in
the stratum, N in the class; ties broken in a seeded order of the strata), and is the next of that stratum's
images in a seeded shuffle. The quota method is house-monotone and satisfies quota, so for every n:

- every stratum gives the floor or the ceiling of its proportional share n N_h / N, and the count is exact;
- a smaller subsample is part of a larger one with the same seed (nested scaling arms, not unrelated draws).

With ``max_total`` the classes first get the floor or ceiling of their share of the total (largest
remainder, also nested for two classes); each stratum then gets the floor or ceiling of its share of its
class's count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import LABEL_COLUMN
from cxrsyn.core.seeding import derive_seed

# the attributes of the prompt grid and of the real readers that a subsample keeps in proportion
STRATIFY_BY = ("sex", "age_band", "habitus", "projection", "view")
SPLITS = ("all", "train", "test")


def selection_order(table: pd.DataFrame, columns: Sequence[str], seed: int, count: int) -> np.ndarray:
    """The first ``count`` rows (positions in ``table``) in the order the quota method takes them (module
    docstring): the first n of this order are the subsample of n, for every n <= ``count``."""
    rng = np.random.default_rng(derive_seed(seed, 0x5E1EC7))
    strata = (
        table.groupby(list(columns), sort=True, dropna=False).indices
        if columns
        else {(): np.arange(len(table))}
    )
    members = [rng.permutation(rows) for _, rows in sorted(strata.items(), key=lambda item: str(item[0]))]
    sizes = np.array([rows.size for rows in members], dtype=np.int64)
    total = int(sizes.sum())
    tie_rank = rng.permutation(sizes.size)  # among equal priorities, the stratum ranked first gets the image
    taken = np.zeros(sizes.size, dtype=np.int64)
    order = np.empty(count, dtype=np.int64)
    for t in range(1, count + 1):
        eligible = taken * total < t * sizes  # a_h < t N_h / N: one more keeps it within its upper quota
        priority = np.where(eligible, sizes / (taken + 1), -np.inf)
        best = np.flatnonzero(priority == priority.max())
        stratum = best[np.argmin(tie_rank[best])]
        order[t - 1] = members[stratum][taken[stratum]]
        taken[stratum] += 1
    return order


def subsample(
    table: pd.DataFrame,
    max_per_class: int | None,
    max_total: int | None,
    seed: int,
    stratify_by: Sequence[str] | None,
    source: str,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The rows kept (original order) and what was done, or the table and None when nothing is asked.
    Asking for more than a class holds stops with one line: a silently smaller arm would mislabel a curve."""
    if max_per_class is None and max_total is None:
        return table, None
    for key, value in (("max_per_class", max_per_class), ("max_total", max_total)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise CxrsynError(f"{key}={value!r} for {source} must be a whole number of images (0 or more)")
    columns = [c for c in (STRATIFY_BY if stratify_by is None else stratify_by) if c in table.columns]
    missing = [c for c in (stratify_by or []) if c not in table.columns]
    if missing:
        raise CxrsynError(
            f"stratify_by={list(stratify_by or [])} for {source}: column(s) {missing} not in the source; "
            f"use some of {[c for c in table.columns if c in STRATIFY_BY]} or null"
        )
    labels = table[LABEL_COLUMN].to_numpy()
    keep = np.ones(len(table), dtype=bool)

    def take(label: int, quota: int) -> None:
        """Keep the first ``quota`` rows of ``label`` (among those still kept) in the quota method's order."""
        rows = np.flatnonzero(keep & (labels == label))
        order = selection_order(table.iloc[rows], columns, derive_seed(seed, label), quota)
        keep[rows] = False
        keep[rows[order]] = True

    if max_per_class is not None:
        for label, name in ((1, "pneumonia"), (0, "normal")):
            available = int((labels == label).sum())
            if max_per_class > available:
                raise CxrsynError(
                    f"max_per_class={max_per_class} for {source}, which holds {available} {name} image(s); "
                    "lower it, or add images (generation makes more with generator.n_per_class)"
                )
            take(label, max_per_class)
    if max_total is not None:
        if max_total > keep.sum():
            raise CxrsynError(
                f"max_total={max_total} for {source}, which holds {int(keep.sum())} image(s) after "
                "max_per_class; lower it or add images"
            )
        for label, quota in class_quotas(labels[keep], max_total).items():
            take(label, quota)
    kept = table[keep].reset_index(drop=True)
    record = {
        "max_per_class": max_per_class,
        "max_total": max_total,
        "seed": seed,
        "stratify_by": columns,
        "available": int(len(table)),
        "selected": int(len(kept)),
        "method": (
            "quota method (Balinski-Young) over label x attribute strata, seeded: each stratum the floor or "
            "ceiling of its proportional share, nested in n"
        ),
    }
    return kept, record


def class_quotas(labels: np.ndarray, total: int) -> dict[int, int]:
    """``total`` split between the classes in proportion to ``labels`` (largest remainder; ties to the lower
    label): each class gets the floor or the ceiling of its share, and a class's quota never falls as
    ``total`` grows, so subsamples stay nested."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = total * counts / counts.sum()
    quotas = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quotas), kind="stable")[: total - quotas.sum()]:
        quotas[i] += 1
    return {int(label): int(quota) for label, quota in zip(classes, quotas, strict=True)}


def repeat_rows(table: pd.DataFrame, repeat: int | None, repeat_to: int | None, source: str) -> pd.DataFrame:
    """The table repeated: ``repeat`` whole copies, or copies up to exactly ``repeat_to`` rows (the first rows
    of the last copy, which is in shuffled-stratum order when the table came from ``subsample``)."""
    if repeat is not None and repeat_to is not None:
        raise CxrsynError(f"{source}: give repeat or repeat_to, not both")
    if repeat is not None:
        if repeat < 1:
            raise CxrsynError(f"repeat={repeat} for {source} must be at least 1")
        return pd.concat([table] * repeat, ignore_index=True)
    if repeat_to is not None:
        if len(table) == 0 or repeat_to < len(table):
            raise CxrsynError(
                f"repeat_to={repeat_to} for {source}, which has {len(table)} image(s); it must be at least that"
            )
        copies = -(-repeat_to // len(table))
        return pd.concat([table] * copies, ignore_index=True).iloc[:repeat_to].reset_index(drop=True)
    return table


def patient_split(patients: pd.Series, split: str, fraction: float, seed: int, source: str) -> np.ndarray:
    """Rows whose patient falls in ``split``: a patient is in ``train`` when a seeded hash of its id is below
    ``fraction``, else in ``test`` (stable: the same patient stays on its side whatever else is selected)."""
    if split not in SPLITS:
        raise CxrsynError(f"split={split!r} for {source}; use one of {', '.join(SPLITS)}")
    if split == "all":
        return np.ones(len(patients), dtype=bool)
    if not 0.0 < fraction < 1.0:
        raise CxrsynError(f"split_fraction={fraction} for {source} must lie strictly between 0 and 1")
    unit = np.array([_hash_unit(f"{seed}\0{patient}") for patient in patients.astype(str)])
    in_train = unit < fraction
    return in_train if split == "train" else ~in_train


def _hash_unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
