"""CheXpert (Irvin et al. 2019, Stanford), read as Stanford AIMI ships it (full resolution or the small version).

```
ROOT/train.csv, ROOT/valid.csv        Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Pneumonia,...
ROOT/train/patient00001/study1/view1_frontal.jpg
ROOT/valid/patient64541/study1/view1_frontal.jpg
```
``ROOT`` may also be the folder holding ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``). The ``Path`` column
starts with that folder's name, which is dropped: images are found beside the CSV.

One sample per image. Selection: ``Pneumonia`` 1 (label 1) vs ``No Finding`` 1 (label 0), frontal images only
by default (``data.frontal_only``). The labels were extracted from reports by the CheXpert labeler; ``-1``
means the report was uncertain. ``data.uncertain`` decides what -1 does:

- ``exclude`` (default): images with Pneumonia -1 are left out (unless No Finding is 1, which never happens);
- ``positive``: they count as pneumonia (the "U-Ones" policy of the CheXpert paper);
- ``negative``: they count as label 0 ("U-Zeros"). They are not normal films (No Finding is never 1 for them),
  so the negative class is then "not pneumonia", no longer "normal".

torchxrayvision's ``CheX_Dataset`` turns -1 into NaN, sets every finding to 0 when No Finding is 1, keeps PA
views and one image per patient by default; this reader keeps every image and states each choice instead.
Every sample carries ``patient`` (``patient00001``), ``study``, ``age`` (0 in the table means unknown),
``age_flag``, ``age_band``, ``sex``, ``view`` (the AP/PA column: AP, PA, LL, RL; LATERAL for lateral images),
``split`` (train/valid) and ``pneumonia_label`` (positive, negative, uncertain or blank: the table's value).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN
from cxrsyn.core.paths import normalize_relative
from cxrsyn.data.label_tables import (
    ATTRIBUTE_COLUMNS,
    PATIENT_COLUMN,
    check_files,
    choices,
    normalized_sex,
    read_label_table,
    value_counts,
    with_age,
)
from cxrsyn.data.sources import FILE_COLUMN, BadFiles, DatasetFolder, PublishedCounts, SourceIndex

LABEL_FILES = {"train": "train.csv", "valid": "valid.csv"}
SPLITS = ("all", "train", "valid")
UNCERTAIN = ("exclude", "positive", "negative")
VIEWS = ("AP", "PA", "LL", "RL")
IMAGE_FOLDERS = ("train", "valid", "test")
REQUIRED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pneumonia")
LABEL_NAMES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}
WHERE = (
    "get CheXpert from Stanford AIMI (free registration, research use agreement; linked from "
    "https://stanfordmlgroup.github.io/competitions/chexpert/) and unzip it"
)
# Counts of the train split (CheXpert-v1.0-small train.csv, 223,414 rows, as torchxrayvision ships it) for the
# default frontal-only selection, by uncertain policy: computed from that table, not taken from a paper.
PUBLISHED_COUNTS = {
    "exclude": {"n": 21649, "n_pos": 4675, "n_neg": 16974},
    "positive": {"n": 37630, "n_pos": 20656, "n_neg": 16974},
    "negative": {"n": 37630, "n_pos": 4675, "n_neg": 32955},
}


@dataclass
class CheXpert(DatasetFolder):
    """CheXpert (Irvin et al., AAAI 2019; Stanford AIMI): its labelled images as a test (or training) source."""

    split: str = "all"  # all (every CSV present) | train | valid
    uncertain: str = "exclude"  # what Pneumonia -1 does: exclude | positive | negative
    frontal_only: bool = True
    view: str | Sequence[str] | None = None  # AP, PA, LL, RL or a list (null: all)
    show_progress: bool = True

    kind = "chexpert"

    @property
    def name(self) -> str:
        return "chexpert"

    def missing_root(self) -> CxrsynError:
        return CxrsynError(
            f"CheXpert root {self.root} does not exist: {WHERE}, then point data.root (or the test set's root, "
            "or $CXRSYN_CHEXPERT_ROOT) at the folder"
        )

    def published_counts(self) -> PublishedCounts | None:
        if self.split == "valid" or not self.frontal_only or self.view is not None:
            return None
        reference = (
            f"CheXpert train.csv (v1.0-small, 223,414 rows), frontal, uncertain={self.uncertain}: "
            "computed from the table torchxrayvision ships; valid.csv has no reference count"
        )
        return PublishedCounts({"train": dict(PUBLISHED_COUNTS[self.uncertain])}, reference)

    def index(self) -> SourceIndex:
        self.check()
        root = Path(self.root)
        if self.split not in SPLITS:
            raise CxrsynError(f"data.split={self.split!r} for CheXpert; use one of {', '.join(SPLITS)}")
        if self.uncertain not in UNCERTAIN:
            raise CxrsynError(
                f"data.uncertain={self.uncertain!r} for CheXpert; use one of {', '.join(UNCERTAIN)}"
            )
        views = choices(self.view, VIEWS, "view", "CheXpert")
        base = find_base(root)
        bad = BadFiles(self.on_bad_file, "CheXpert")
        found: dict[str, Any] = {"folder": str(base.relative_to(root)) or "."}
        splits = [split for split in LABEL_FILES if self.split in ("all", split)]
        parts = []
        for split in splits:
            path = base / LABEL_FILES[split]
            if not path.is_file():
                if self.split == "all" and split == "valid":
                    continue
                raise CxrsynError(f"{path} is missing; {WHERE} (or choose another data.split)")
            parts.append(read_labels(path).assign(split=split))
            found[f"{split}_rows"] = len(parts[-1])
        rows = pd.concat(parts, ignore_index=True)
        found["label_files"] = [LABEL_FILES[split] for split in splits if f"{split}_rows" in found]
        found["pneumonia_values"] = value_counts(rows["pneumonia_label"])

        if self.frontal_only:
            found["lateral_left_out"] = int((rows["Frontal/Lateral"] != "Frontal").sum())
            rows = rows[rows["Frontal/Lateral"] == "Frontal"]
        selected = self._select(rows, found)
        view = np.where(
            selected["Frontal/Lateral"] == "Frontal", selected["AP/PA"].fillna("").str.upper(), "LATERAL"
        )
        selected = selected.assign(view=view)
        if self.view is not None:
            selected = selected[selected["view"].isin(views)]
            found["view_filter"] = views

        relative = [image_path(path) for path in selected["Path"]]
        selected = selected.assign(
            **{
                FILE_COLUMN: [str(base / path) for path in relative],
                PATH_COLUMN: [str((base / path).relative_to(root)) for path in relative],
            }
        )
        exists = np.array([os.path.isfile(file) for file in selected[FILE_COLUMN]], dtype=bool)
        for path, name, split in selected.loc[~exists, [PATH_COLUMN, "Path", "split"]].itertuples(
            index=False
        ):
            bad(path, f"{name} is listed in {LABEL_FILES[split]} but its image file is missing")
        selected = check_files(selected[exists], root, bad, self.show_progress, self.max_image_pixels)

        table = _with_attributes(selected)
        table = table.sort_values(PATH_COLUMN, kind="stable").reset_index(drop=True)
        found["selection"] = "pneumonia_vs_no_finding"
        columns = [
            FILE_COLUMN,
            PATH_COLUMN,
            LABEL_COLUMN,
            *ATTRIBUTE_COLUMNS,
            "study",
            "split",
            "pneumonia_label",
        ]
        return SourceIndex(table[columns], bad.skipped, found)

    def _select(self, rows: pd.DataFrame, found: dict[str, Any]) -> pd.DataFrame:
        pneumonia, no_finding = rows["Pneumonia"], rows["No Finding"]
        positive = pneumonia == 1
        negative = no_finding == 1
        uncertain = pneumonia == -1
        conflicting = positive & negative
        if self.uncertain == "positive":
            positive = positive | (uncertain & ~negative)
        elif self.uncertain == "negative":
            negative = negative | uncertain
        effect = {
            "exclude": "left out",
            "positive": "counted as pneumonia (label 1)",
            "negative": "counted as label 0: not pneumonia, and not normal films either",
        }[self.uncertain]
        found["uncertain"] = {
            "policy": self.uncertain,
            "images_with_pneumonia_-1": int(uncertain.sum()),
            "effect": effect,
        }
        if conflicting.any():
            found["left_out_pneumonia_and_no_finding"] = int(conflicting.sum())
        keep = (positive | negative) & ~conflicting
        found["left_out_other_findings"] = int((~keep).sum())
        return rows[keep].assign(**{LABEL_COLUMN: positive[keep].astype(int)})


def find_base(root: Path) -> Path:
    """The folder holding train.csv or valid.csv: ``root`` itself or one folder below it."""

    def has_labels(folder: Path) -> bool:
        return any((folder / name).is_file() for name in LABEL_FILES.values())

    if has_labels(root):
        return root
    below = sorted(folder for folder in root.iterdir() if folder.is_dir() and has_labels(folder))
    if len(below) == 1:
        return below[0]
    if below:
        listing = ", ".join(folder.name for folder in below)
        raise CxrsynError(
            f"{root} holds several CheXpert folders ({listing}); point data.root at the one to use"
        )
    raise CxrsynError(f"no train.csv or valid.csv in {root} or a folder below it: {WHERE}")


def read_labels(path: Path) -> pd.DataFrame:
    """A CheXpert label CSV, with its label values checked and ``pneumonia_label`` named."""
    fix = f"re-download it ({WHERE})"
    rows = read_label_table(path, REQUIRED, "CheXpert", fix, usecols=REQUIRED)
    for column in ("Pneumonia", "No Finding"):
        values = pd.to_numeric(rows[column], errors="coerce")
        wrong = (values.isna() & rows[column].notna()) | ~(values.isna() | values.isin([1, 0, -1]))
        if wrong.any():
            line = int(rows.index[wrong][0]) + 2
            raise CxrsynError(f"{path} line {line}: {column} must be 1, 0, -1 or blank; {fix}")
        rows[column] = values
    if rows["Path"].isna().any():
        raise CxrsynError(f"{path} line {int(rows.index[rows['Path'].isna()][0]) + 2}: empty Path; {fix}")
    rows["Path"] = rows["Path"].astype(str).map(normalize_relative)  # one file, one spelling
    if rows["Path"].duplicated().any():
        raise CxrsynError(
            f"{path}: image {rows.loc[rows['Path'].duplicated(), 'Path'].iloc[0]} has more than one row; {fix}"
        )
    return rows.assign(pneumonia_label=rows["Pneumonia"].map(LABEL_NAMES).fillna("blank"))


def image_path(listed: str) -> str:
    """``CheXpert-v1.0-small/train/patient00001/...`` -> ``train/patient00001/...``: from the split folder on."""
    parts = listed.replace("\\", "/").split("/")
    for number, part in enumerate(parts):
        if part in IMAGE_FOLDERS:
            return "/".join(parts[number:])
    return "/".join(parts[1:]) if len(parts) > 1 else listed


def _with_attributes(table: pd.DataFrame) -> pd.DataFrame:
    age = pd.to_numeric(table["Age"], errors="coerce")
    table = with_age(table, age.where(age > 0))  # CheXpert writes 0 where the age is unknown
    path = table["Path"].astype(str)
    return table.assign(
        **{
            PATIENT_COLUMN: path.str.extract(r"(patient\d+)", expand=False).fillna(
                path
            ),  # no id: its own patient
            "study": path.str.extract(r"(study\d+)", expand=False).fillna(""),
            "sex": normalized_sex(table["Sex"], {"Male": "M", "Female": "F", "Unknown": ""}),
        }
    )
