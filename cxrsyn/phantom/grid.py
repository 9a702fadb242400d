"""The controlled attribute grid that every generator (Nano Banana, RoentGen-v2, phantom) samples from.

Each generated image gets one cell of the grid: sex, age band, body habitus and projection, crossed with the
class. Sampling is balanced (every cell as equally often as the count allows) and deterministic for a seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cxrsyn.core.manifest import NEGATIVE_LABEL, POSITIVE_LABEL

# One home for the attribute names and their default values (configs may narrow or extend them).
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male"),
    "age_band": ("18-39", "40-64", "65-90"),
    "habitus": ("slim", "average", "obese"),
    "projection": ("PA erect", "AP supine"),
}
# Children (the paediatric prompt grid, conf/grid/paediatric.yaml): Kermany's films are of children aged 1-5.
PAEDIATRIC_AGE_BANDS: tuple[str, ...] = ("1-5", "6-11", "12-17")
PAEDIATRIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male"),
    "age_band": ("1-5",),
    "habitus": ("slim", "average"),
    "projection": ("AP supine", "AP erect"),
}
# What the phantom's attribute reader is fitted on (cxrsyn/auditing/readers.py): every age band, projection
# and sex the phantom draws.
READABLE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male"),
    "age_band": (*PAEDIATRIC_AGE_BANDS, *DEFAULT_ATTRIBUTES["age_band"]),
    "habitus": ("slim", "average"),
    "projection": ("PA erect", "AP supine", "AP erect"),
}
CLASS_NAMES = {POSITIVE_LABEL: "pneumonia", NEGATIVE_LABEL: "normal"}


@dataclass(frozen=True)
class GridCell:
    """One image request: its class, its attributes and the seed that makes it reproducible."""

    index: int
    label: int
    attributes: Mapping[str, str]
    seed: int

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


@dataclass
class AttributeGrid:
    attributes: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))

    def cells(self) -> list[dict[str, str]]:
        names = list(self.attributes)
        return [
            dict(zip(names, values, strict=True)) for values in itertools.product(*self.attributes.values())
        ]

    def sample(self, n_per_class: int, seed: int) -> list[GridCell]:
        """``n_per_class`` requests per class, pneumonia first, each with its own seed.

        Both classes get the same list of attribute cells, so no attribute is confounded with the class.
        Every grid cell is used floor(n / cells) or ceil(n / cells) times; the cells of the last, partial pass
        are picked greedily so that each attribute's values stay as even as the count allows.
        """
        if n_per_class < 1:
            raise ValueError("n_per_class must be at least 1")
        rng = np.random.default_rng(seed)
        grid = self.cells()
        full_passes, remainder = divmod(n_per_class, len(grid))
        chosen: list[dict[str, str]] = []
        for _ in range(full_passes):
            chosen.extend(grid[i] for i in rng.permutation(len(grid)))
        chosen.extend(_balanced_subset([grid[i] for i in rng.permutation(len(grid))], remainder))
        requests: list[GridCell] = []
        for label in (POSITIVE_LABEL, NEGATIVE_LABEL):
            for attributes in chosen:
                requests.append(GridCell(len(requests), label, attributes, int(rng.integers(2**31 - 1))))
        return requests


def _balanced_subset(candidates: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    """Pick ``count`` cells, each time the one whose attribute values have been used least so far."""
    used: dict[tuple[str, str], int] = {}
    remaining = list(candidates)
    picked: list[dict[str, str]] = []
    for _ in range(count):
        best = min(remaining, key=lambda cell: sum(used.get(item, 0) for item in cell.items()))
        remaining.remove(best)
        picked.append(best)
        for item in best.items():
            used[item] = used.get(item, 0) + 1
    return picked
