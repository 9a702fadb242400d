"""NIH ChestX-ray14 (Wang et al. 2017), read as the NIH box or Kaggle (``nih-chest-xrays/data``) ships it.

```
ROOT/Data_Entry_2017_v2020.csv       NIH box, 2020 revision (ages corrected); Kaggle has Data_Entry_2017.csv
ROOT/images_001/images/*.png ...     Kaggle: images_001/ ... images_012/, 112,120 PNGs (8-bit, 1024 px)
ROOT/images/*.png                    the NIH box tarballs images_001.tar.gz ... unpacked
ROOT/train_val_list.txt, test_list.txt   optional: the official patient-wise split (86,524 / 25,596 images)
ROOT/google2019_nih-chest-xray-labels.csv[.gz]   optional: Google's radiologist-adjudicated labels, or
ROOT/four_findings_expert_labels/{test,validation}_labels.csv   as Google Cloud publishes them
```
One sample per image. Selections:

- ``pneumonia_vs_no_finding`` (default): ``Pneumonia`` among the ``|``-separated Finding Labels (1,431 images,
  label 1) vs Finding Labels ``No Finding`` (60,361, label 0); the other 50,328 images are left out. The
  labels were mined from reports by NLP. torchxrayvision's ``NIH_Dataset`` tests ``'Pneumonia' in`` the
  label string, which selects the same 1,431 (no other label contains the word); it also keeps one image per
  patient and PA views only by default, which this reader does not (``data.view`` filters).
- ``airspace_opacity_expert``: the 4,376 images Google's radiologists adjudicated (Majkowska et al. 2020):
  ``Airspace opacity`` YES (2,166, label 1) vs NO (2,210). Airspace opacity is not pneumonia: it includes
  edema, atelectasis and other opacities; it is the expert-read neighbour of the pneumonia question.

``data.split=test`` (or ``train_val``) keeps the images of the official list file, which must be present.
Every sample carries ``patient`` (the 8-digit Patient ID of its file name), ``follow_up`` (Follow-up #),
``age``, ``age_flag``, ``age_band``, ``sex``, ``view``, ``findings`` (Finding Labels), ``split`` (the official
list the image is in, empty without the list files) and, for the expert selection, ``expert_set``.

The RSNA Pneumonia Detection Challenge images are NIH ChestX-ray14 images re-read by radiologists: results
on ``nih`` and ``rsna`` share images and patients and are not independent evidence (``found["note"]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN
from cxrsyn.data.label_tables import (
    ATTRIBUTE_COLUMNS,
    PATIENT_COLUMN,
    check_files,
    choices,
    find_images,
    missing_files,
    normalized_sex,
    read_label_table,
    require_columns,
    value_counts,
    with_age,
)
from cxrsyn.data.rsna import NIH_OVERLAP_NOTE
from cxrsyn.data.sources import FILE_COLUMN, BadFiles, DatasetFolder, PublishedCounts, SourceIndex

LABEL_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # the first present is read
SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
EXPERT_FILES = (
    ("google2019_nih-chest-xray-labels.csv.gz",),
    ("google2019_nih-chest-xray-labels.csv",),
    ("four_findings_expert_labels/test_labels.csv", "four_findings_expert_labels/validation_labels.csv"),
    ("four_findings_expert_labels_test_labels.csv", "four_findings_expert_labels_validation_labels.csv"),
)
SELECTIONS = ("pneumonia_vs_no_finding", "airspace_opacity_expert")
SPLITS = ("all", "train_val", "test")
VIEWS = ("PA", "AP")
PNEUMONIA, NO_FINDING = "Pneumonia", "No Finding"
EXPERT_COLUMN = "Airspace opacity"
WHERE = (
    "download it from the NIH box (https://nihcc.app.box.com/v/ChestXray-NIHCC) or Kaggle "
    "(`python -m cxrsyn.data download nih --root DIR`, dataset nih-chest-xrays/data)"
)
EXPERT_WHERE = (
    "Google's four-findings expert labels are at gs://gcs-public-data--healthcare-nih-chest-xray-labels/"
    "four_findings_expert_labels/ (test_labels.csv, validation_labels.csv; put them in a "
    "four_findings_expert_labels/ folder under the root) or ship with torchxrayvision as "
    "data/google2019_nih-chest-xray-labels.csv.gz (copy it into the root), or set data.expert_labels=FILE"
)
PUBLISHED_COUNTS = {
    "pneumonia_vs_no_finding": {"n": 61792, "n_pos": 1431, "n_neg": 60361},
    "airspace_opacity_expert": {"n": 4376, "n_pos": 2166, "n_neg": 2210},
}
_PATIENT = re.compile(r"^(\d+)_\d+\.png$")


@dataclass
class NIH(DatasetFolder):
    """NIH ChestX-ray14 (Wang et al., CVPR 2017), with Google's expert labels (Majkowska et al., Radiology
    2020), as a test (or training) source."""

    selection: str = "pneumonia_vs_no_finding"
    split: str = "all"  # all | train_val | test (the official lists)
    view: str | Sequence[str] | None = None  # PA, AP or both (null)
    expert_labels: str | None = None  # Google's labels file; null: looked for in the root
    show_progress: bool = True

    kind = "nih"

    @property
    def name(self) -> str:
        return "nih"

    def missing_root(self) -> CxrsynError:
        return CxrsynError(
            f"NIH ChestX-ray14 root {self.root} does not exist: {WHERE}, then point data.root (or the test "
            "set's root, or $CXRSYN_NIH_ROOT) at the folder"
        )

    def published_counts(self) -> PublishedCounts | None:
        if self.split != "all" or self.view is not None:
            return None
        return PublishedCounts(
            {"all": dict(PUBLISHED_COUNTS[self.selection])}, f"NIH ChestX-ray14 selection {self.selection}"
        )

    def index(self) -> SourceIndex:
        self.check()
        root = Path(self.root)
        if self.selection not in SELECTIONS:
            raise CxrsynError(
                f"data.selection={self.selection!r} for NIH; use one of {', '.join(SELECTIONS)}"
            )
        if self.split not in SPLITS:
            raise CxrsynError(f"data.split={self.split!r} for NIH; use one of {', '.join(SPLITS)}")
        views = choices(self.view, VIEWS, "view", "NIH")
        bad = BadFiles(self.on_bad_file, "NIH")
        label_path = self._label_file(root)
        entries = read_entries(label_path)
        found: dict[str, Any] = {
            "note": NIH_OVERLAP_NOTE,
            "label_file": label_path.name,
            "label_rows": len(entries),
            "patients": int(entries["Patient ID"].nunique()),
            "finding_labels": value_counts(entries["Finding Labels"].str.split("|").explode()),
        }
        split_of = self._official_split(root, entries, found)
        entries = entries.assign(split=entries["Image Index"].map(split_of).fillna(""))

        if self.selection == "pneumonia_vs_no_finding":
            labels = entries["Finding Labels"].str.split("|")
            positive = labels.map(lambda names: PNEUMONIA in names)
            negative = entries["Finding Labels"] == NO_FINDING
            selected = entries[positive | negative].assign(
                **{LABEL_COLUMN: positive[positive | negative].astype(int)}
            )
            found["left_out_other_findings"] = int((~(positive | negative)).sum())
        else:
            selected = self._expert_selection(root, entries, bad, found)

        if self.split != "all":
            selected = selected[selected["split"] == self.split]
            found["split_filter"] = self.split
        if sorted(views) != sorted(VIEWS):
            selected = selected[selected["View Position"].isin(views)]
            found["view_filter"] = views

        files, duplicates = find_images(root, (".png",))
        found["image_files"] = len(files)
        found["images_without_label_row"] = len(set(files) - set(entries["Image Index"]))
        if duplicates:
            found["duplicate_image_files_ignored"] = duplicates[:20] + (
                [f"... {len(duplicates) - 20} more"] if len(duplicates) > 20 else []
            )
        names = selected["Image Index"]
        selected = selected.assign(**{PATH_COLUMN: names.map(files).fillna(names)})
        selected = selected[missing_files(selected, names, files, label_path.name, bad)]
        selected = selected.assign(**{FILE_COLUMN: [str(root / path) for path in selected[PATH_COLUMN]]})
        selected = check_files(selected, root, bad, self.show_progress, self.max_image_pixels)

        table = _with_attributes(selected, found)
        table = table.sort_values(PATH_COLUMN, kind="stable").reset_index(drop=True)
        found["selection"] = self.selection
        columns = [
            FILE_COLUMN,
            PATH_COLUMN,
            LABEL_COLUMN,
            *ATTRIBUTE_COLUMNS,
            "follow_up",
            "findings",
            "split",
        ]
        if self.selection == "airspace_opacity_expert":
            columns.append("expert_set")
        return SourceIndex(table[columns], bad.skipped, found)

    def _label_file(self, root: Path) -> Path:
        for name in LABEL_FILES:
            if (root / name).is_file():
                return root / name
        raise CxrsynError(
            f"{root} has no {' or '.join(LABEL_FILES)}; the NIH root needs the label table from the download: "
            f"{WHERE}"
        )

    def _official_split(self, root: Path, entries: pd.DataFrame, found: dict[str, Any]) -> dict[str, str]:
        split_of: dict[str, str] = {}
        present = []
        for split, filename in SPLIT_FILES.items():
            path = root / filename
            if not path.is_file():
                continue
            present.append(filename)
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            unknown = set(names) - set(entries["Image Index"])
            if unknown:
                raise CxrsynError(
                    f"{path} lists {len(unknown)} image(s) not in the label table (e.g. {sorted(unknown)[0]}); "
                    "the files come from different releases, re-download them"
                )
            split_of.update(dict.fromkeys(names, split))
        found["split_files"] = present
        if self.split != "all" and SPLIT_FILES[self.split] not in present:
            raise CxrsynError(
                f"data.split={self.split} needs {root / SPLIT_FILES[self.split]}, which is missing; it comes with "
                f"the download ({WHERE}), or use data.split=all"
            )
        return split_of

    def _expert_selection(
        self, root: Path, entries: pd.DataFrame, bad: BadFiles, found: dict[str, Any]
    ) -> pd.DataFrame:
        expert = read_expert_labels(self._expert_files(root))
        found["expert_label_rows"] = len(expert)
        known = expert["Image Index"].isin(entries["Image Index"])
        for name in expert.loc[~known, "Image Index"]:
            bad(name, f"{name} has expert labels but no row in the NIH label table")
        expert = expert[known]
        selected = entries.merge(expert, on="Image Index", how="inner", validate="one_to_one")
        return selected.assign(**{LABEL_COLUMN: (selected[EXPERT_COLUMN] == "YES").astype(int)})

    def _expert_files(self, root: Path) -> list[Path]:
        if self.expert_labels:
            path = Path(self.expert_labels)
            return [path if path.is_absolute() else root / path]
        for names in EXPERT_FILES:
            if all((root / name).is_file() for name in names):
                return [root / name for name in names]
        raise CxrsynError(
            f"selection airspace_opacity_expert needs Google's expert labels, not found under {root}: {EXPERT_WHERE}"
        )


def read_entries(path: Path) -> pd.DataFrame:
    """Data_Entry_2017*.csv with ``Patient Sex`` (the 2020 name) read as ``Patient Gender`` (the 2017 one)."""
    fix = f"re-download it ({WHERE})"
    required = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "View Position"]
    entries = read_label_table(path, required, "NIH ChestX-ray14", fix, dtype=str)
    if "Patient Gender" not in entries.columns and "Patient Sex" in entries.columns:
        entries = entries.rename(columns={"Patient Sex": "Patient Gender"})
    require_columns(entries, path, ["Patient Gender"], "NIH ChestX-ray14", fix)
    for column in ("Image Index", "Finding Labels"):
        empty = entries[column].isna() | (entries[column].str.strip() == "")
        if empty.any():
            raise CxrsynError(f"{path} line {int(entries.index[empty][0]) + 2}: empty {column}; {fix}")
    duplicated = entries["Image Index"].duplicated()
    if duplicated.any():
        name = entries.loc[duplicated, "Image Index"].iloc[0]
        raise CxrsynError(f"{path}: image {name} has more than one row; {fix}")
    return entries


def read_expert_labels(paths: Sequence[Path]) -> pd.DataFrame:
    """Google's labels: ``Image Index``, ``Airspace opacity`` (YES/NO) and ``expert_set`` (test/validation)."""
    parts = []
    for path in paths:
        fix = f"re-download it ({EXPERT_WHERE})"
        table = read_label_table(path, ["Image Index", EXPERT_COLUMN], "Google expert", fix, dtype=str)
        if "Set Id" in table.columns:  # torchxrayvision's combined file
            sets = table["Set Id"].fillna("")
        else:
            sets = "validation" if "validation" in path.name else "test"
        table = table.assign(expert_set=sets)
        values = table[EXPERT_COLUMN].str.strip().str.upper()
        wrong = ~values.isin(["YES", "NO"])
        if wrong.any():
            line = int(table.index[wrong][0]) + 2
            raise CxrsynError(f"{path} line {line}: {EXPERT_COLUMN} must be YES or NO; {fix}")
        parts.append(table.assign(**{EXPERT_COLUMN: values})[["Image Index", EXPERT_COLUMN, "expert_set"]])
    expert = pd.concat(parts, ignore_index=True)
    if expert["Image Index"].duplicated().any():
        name = expert.loc[expert["Image Index"].duplicated(), "Image Index"].iloc[0]
        raise CxrsynError(
            f"image {name} has more than one row in the expert labels {', '.join(map(str, paths))}"
        )
    return expert


def patient_of(image_index: str, patient_id: str) -> str:
    """The 8-digit patient number of ``00000001_000.png``; the Patient ID column, zero-padded, otherwise."""
    match = _PATIENT.match(image_index)
    return match[1] if match else f"{int(patient_id):08d}"


def _with_attributes(table: pd.DataFrame, found: dict[str, Any]) -> pd.DataFrame:
    table = with_age(table, table["Patient Age"])
    table = table.assign(
        **{
            PATIENT_COLUMN: [
                patient_of(name, pid)
                for name, pid in zip(table["Image Index"], table["Patient ID"], strict=True)
            ],
            "follow_up": pd.to_numeric(table["Follow-up #"], errors="coerce").astype("Int64"),
            "sex": normalized_sex(table["Patient Gender"]),
            "view": table["View Position"].fillna("").str.strip().str.upper(),
            "findings": table["Finding Labels"],
        }
    )
    flagged = table[table["age_flag"] != ""]
    found["age_flags"] = {
        str(row["Image Index"]): f"{row['age_flag']} ({row['Patient Age']})" for _, row in flagged.iterrows()
    }
    return table
