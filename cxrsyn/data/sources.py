"""Data sources: where a set of labelled images comes from and how to make it ready.

Every source ends as a table of samples with ``file`` (absolute), ``path`` (as listed), ``label`` and the
source's attributes. ``prepare()`` makes the source ready (the phantom generates itself; a folder only checks
that it exists) and runs once, on one process; ``load()`` reads the table on every process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrsyn.data.manifest import LABEL_COLUMN, PATH_COLUMN, read_manifest
from cxrsyn.generate.grid import DEFAULT_ATTRIBUTES
from cxrsyn.generate.phantom import PhantomSpec, write_phantom_dataset

FILE_COLUMN = "file"


@dataclass
class DatasetFolder:
    """A dataset folder (``images/`` + ``manifest.csv``). ``crop_bottom_fraction`` crops on the fly."""

    root: str
    crop_bottom_fraction: float = 0.0

    @property
    def name(self) -> str:
        return Path(self.root).name

    def prepare(self) -> None:
        """Nothing to make: ``load`` reports a missing folder with the fix."""

    def load(self) -> pd.DataFrame:
        table = read_manifest(self.root)
        table.insert(0, FILE_COLUMN, [str(Path(self.root) / path) for path in table[PATH_COLUMN]])
        return table


@dataclass
class PhantomFolder(DatasetFolder):
    """A phantom dataset folder, generated on first use and regenerated when its settings change."""

    domain: str = "generator_like"
    n_per_class: int = 150
    seed: int = 0
    image_size: int = 256
    shortcut_strength: float = 0.5
    attributes: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))

    def spec(self) -> PhantomSpec:
        return PhantomSpec(
            domain=self.domain,
            n_per_class=self.n_per_class,
            seed=self.seed,
            image_size=self.image_size,
            shortcut_strength=self.shortcut_strength,
            attributes={name: list(values) for name, values in self.attributes.items()},
        )

    def prepare(self) -> None:
        write_phantom_dataset(self.root, self.spec())


def label_counts(table: pd.DataFrame) -> dict[str, int]:
    n_pos = int((table[LABEL_COLUMN] == 1).sum())
    return {"n": int(len(table)), "n_pos": n_pos, "n_neg": int(len(table)) - n_pos}
