"""PadChest (Bustos et al. 2020, Hospital San Juan, Alicante), read as BIMCV ships it.

```
ROOT/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]   one row per image (160,861)
ROOT/<ImageDir>/<ImageID>.png      the zips 0.zip ... 54.zip, each unpacked into its own folder, or
ROOT/<ImageID>.png                 all unpacked into one folder
```
Images are 16-bit grayscale PNGs holding 10- or 12-bit values (``BitsStored_DICOM``), all MONOCHROME2.

One sample per image. Selection: label 1 = ``pneumonia`` or ``atypical pneumonia`` among the image's labels,
label 0 = ``normal`` as its only label; images labelled both pneumonia and normal (4) or ``exclude`` are
left out, as are images without labels (103). Views: the ``Projection`` column, PA, AP and AP_horizontal
(supine AP) by default (``data.projection``). Labels come from reports, by physicians for about a quarter of
the images and by a recurrent network for the rest (``MethodLabel``; ``data.labels_by=physician`` keeps the
former). torchxrayvision's ``PC_Dataset`` matches label substrings (so ``pneumonia`` also selects ``atypical
pneumonia``, as here), keeps PA views, one image per patient and patients over 10 by default; this reader keeps
every image and states each choice. Its list of files missing from or broken in the download (21 names) is
left out here too (``data.exclude_known_broken``; 5 of them are normal PA/AP films).

Pixels: PadChest-specific windowing (``data.window``, default ``min_max``): each image is stretched from its
minimum to its maximum stored value, as the DICOM pipeline does for deep data without a VOI window
(``cxrsyn.data.dicom``). The PNGs fill only the low 10 or 12 bits of 16, so dividing by 65535 would leave a
nearly black image with 16 to 64 grey levels. ``percentile`` (``data.window_percentiles``, default 0.5 and
99.5) clips the extreme pixels instead. The table's DICOM window (``WindowCenter_DICOM``) is not used: how
the PNG values relate to the stored DICOM values is not documented.

Every sample carries ``patient`` (PatientID), ``study`` (StudyID), ``age`` (study year minus birth year),
``age_flag``, ``age_band``, ``sex`` (M, F, or O as the table writes it), ``view`` (PA or AP),
``projection`` (the table's), ``label_method`` (physician or rnn), ``pediatric``, ``manufacturer`` and
``findings`` (the image's labels, ``|``-separated).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN
from cxrsyn.data.images import DeepWindow
from cxrsyn.data.label_tables import (
    ATTRIBUTE_COLUMNS,
    PATIENT_COLUMN,
    check_files,
    choices,
    find_images,
    missing_files,
    normalized_sex,
    read_label_table,
    value_counts,
    with_age,
)
from cxrsyn.data.sources import FILE_COLUMN, BadFiles, DatasetFolder, PublishedCounts, SourceIndex

LABEL_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
LABEL_FILES = (f"{LABEL_FILE}.gz", LABEL_FILE)
REQUIRED = (
    "ImageID",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "Projection",
    "Labels",
)
OPTIONAL = ("ImageDir", "MethodLabel", "Pediatric", "Manufacturer_DICOM")
PROJECTIONS = ("PA", "AP", "AP_horizontal", "L", "COSTAL", "EXCLUDE", "UNK")
FRONTAL = ("PA", "AP", "AP_horizontal")
POSITIVE_LABELS = frozenset({"pneumonia", "atypical pneumonia"})
NORMAL, EXCLUDE = "normal", "exclude"
LABELS_BY = ("any", "physician")
METHODS = {"Physician": "physician", "RNN_model": "rnn"}
# Files torchxrayvision's PC_Dataset leaves out: missing from the download, or broken PNGs (its comments:
# "image file is truncated", broken chunk).
KNOWN_BROKEN = frozenset(
    {
        "216840111366964012819207061112010307142602253_04-014-084.png",
        "216840111366964012989926673512011074122523403_00-163-058.png",
        "216840111366964012959786098432011033083840143_00-176-115.png",
        "216840111366964012558082906712009327122220177_00-102-064.png",
        "216840111366964012339356563862009072111404053_00-043-192.png",
        "216840111366964013076187734852011291090445391_00-196-188.png",
        "216840111366964012373310883942009117084022290_00-064-025.png",
        "216840111366964012283393834152009033102258826_00-059-087.png",
        "216840111366964012373310883942009170084120009_00-097-074.png",
        "216840111366964012819207061112010315104455352_04-024-184.png",
        "216840111366964012819207061112010306085429121_04-020-102.png",
        "216840111366964012989926673512011083134050913_00-168-009.png",
        "216840111366964012373310883942009152114636712_00-102-045.png",
        "216840111366964012819207061112010281134410801_00-129-131.png",
        "216840111366964012487858717522009280135853083_00-075-001.png",
        "216840111366964012989926673512011151082430686_00-157-045.png",
        "216840111366964013686042548532013208193054515_02-026-007.png",
        "216840111366964013590140476722013058110301622_02-056-111.png",
        "216840111366964013590140476722013043111952381_02-065-198.png",
        "216840111366964013829543166512013353113303615_02-092-190.png",
        "216840111366964013962490064942014134093945580_01-178-104.png",
    }
)
WHERE = (
    "get PadChest from BIMCV (https://bimcv.cipf.es/bimcv-projects/padchest/, free registration; "
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz and the image zips 0.zip ... 54.zip) and unzip it"
)
# Counts of the default selection (PA, AP and AP_horizontal; any label method; the 21 known-broken files left
# out), computed from the label table torchxrayvision ships, not taken from a paper.
PUBLISHED_COUNTS = {"n": 41162, "n_pos": 5221, "n_neg": 35941}


@dataclass
class PadChest(DatasetFolder):
    """PadChest (Bustos et al., Medical Image Analysis 2020; BIMCV): its pneumonia and normal images as a test
    (or training) source."""

    projection: str | Sequence[str] = field(default_factory=lambda: list(FRONTAL))
    labels_by: str = "any"  # any | physician (MethodLabel)
    exclude_known_broken: bool = True
    window: str = "min_max"  # min_max | percentile | full_range: how 16-bit pixels become [0, 1]
    window_percentiles: Sequence[float] = (0.5, 99.5)
    show_progress: bool = True

    kind = "padchest"

    @property
    def name(self) -> str:
        return "padchest"

    def deep_window(self) -> DeepWindow:
        return DeepWindow(self.window, tuple(self.window_percentiles))

    def missing_root(self) -> CxrsynError:
        return CxrsynError(
            f"PadChest root {self.root} does not exist: {WHERE}, then point data.root (or the test set's root, "
            "or $CXRSYN_PADCHEST_ROOT) at the folder"
        )

    def index(self) -> SourceIndex:
        self.check()
        root = Path(self.root)
        projections = choices(self.projection, PROJECTIONS, "projection", "PadChest")
        if self.labels_by not in LABELS_BY:
            raise CxrsynError(
                f"data.labels_by={self.labels_by!r} for PadChest; use one of {', '.join(LABELS_BY)}"
            )
        self.deep_window()  # a bad window setting stops here, before any work
        bad = BadFiles(self.on_bad_file, "PadChest")
        label_path = next((root / name for name in LABEL_FILES if (root / name).is_file()), None)
        if label_path is None:
            raise CxrsynError(
                f"{root} has no {LABEL_FILE}[.gz]; the PadChest root needs its label table: {WHERE}"
            )
        rows = read_rows(label_path)
        listed = set(rows["ImageID"])
        found: dict[str, Any] = {
            "label_file": label_path.name,
            "label_rows": len(rows),
            "patients": int(rows["PatientID"].nunique()),
            "projections": value_counts(rows["Projection"]),
            "without_labels": int(rows["Labels"].isna().sum()),
            "window": self._window_text(),
        }
        rows = rows[rows["Labels"].notna() & rows["Projection"].isin(projections)]
        found["projection_filter"] = projections
        if self.labels_by == "physician":
            rows = rows[rows["MethodLabel"] == "Physician"]
            found["labels_by"] = "physician"
        # only rows that can be selected are parsed: literal_eval of all 160k label lists takes seconds
        candidate = rows["Labels"].str.contains("pneumonia|normal", regex=True)
        rows = rows[candidate]
        labels = parse_labels(rows["Labels"], label_path)
        positive = labels.map(lambda names: bool(names & POSITIVE_LABELS))
        normal = labels.map(lambda names: NORMAL in names)
        excluded = labels.map(lambda names: EXCLUDE in names)
        only_normal = labels.map(lambda names: names == {NORMAL})
        contradictory = positive & normal
        found["left_out_pneumonia_and_normal"] = int(contradictory.sum())
        found["left_out_marked_exclude"] = int((positive & excluded & ~normal).sum())
        keep = (positive & ~normal & ~excluded) | only_normal
        rows = rows[keep].assign(**{LABEL_COLUMN: positive[keep].astype(int), "labels": labels[keep]})
        if self.exclude_known_broken:
            broken = rows["ImageID"].isin(KNOWN_BROKEN)
            found["known_broken_left_out"] = sorted(rows.loc[broken, "ImageID"])
            rows = rows[~broken]

        files, duplicates = find_images(root, (".png",), max_depth=3)  # also <folder>/<ImageDir>/<ImageID>
        found["image_files"] = len(files)
        found["images_without_label_row"] = len(set(files) - listed)
        if duplicates:
            found["duplicate_image_files_ignored"] = duplicates[:20]
        names = rows["ImageID"]
        rows = rows.assign(**{PATH_COLUMN: names.map(files).fillna(names)})
        rows = rows[missing_files(rows, names, files, label_path.name, bad)]
        rows = rows.assign(**{FILE_COLUMN: [str(root / path) for path in rows[PATH_COLUMN]]})
        rows = check_files(rows, root, bad, self.show_progress, self.max_image_pixels)

        table = _with_attributes(rows, found)
        table = table.sort_values(PATH_COLUMN, kind="stable").reset_index(drop=True)
        found["selection"] = "pneumonia_vs_normal"
        columns = [FILE_COLUMN, PATH_COLUMN, LABEL_COLUMN, *ATTRIBUTE_COLUMNS, "study", "projection"]
        columns += ["label_method", "pediatric", "manufacturer", "findings"]
        return SourceIndex(table[columns], bad.skipped, found)

    def _window_text(self) -> str:
        window = self.deep_window()
        if window.method == "percentile":
            return f"percentile {window.percentiles[0]:g}-{window.percentiles[1]:g}"
        return window.method

    def published_counts(self) -> PublishedCounts | None:
        default = sorted(choices(self.projection, PROJECTIONS, "projection", "PadChest")) == sorted(FRONTAL)
        if default and self.labels_by == "any" and self.exclude_known_broken:
            reference = "PadChest 160K table, PA/AP/AP_horizontal: computed from the shipped table"
            return PublishedCounts({"all": dict(PUBLISHED_COUNTS)}, reference)
        return None


def read_rows(path: Path) -> pd.DataFrame:
    fix = f"re-download it ({WHERE})"
    rows = read_label_table(path, REQUIRED, "PadChest", fix, usecols=(*REQUIRED, *OPTIONAL), dtype=str)
    for column in OPTIONAL:
        if column not in rows.columns:
            rows[column] = ""
    empty = rows["ImageID"].isna()
    if empty.any():
        raise CxrsynError(f"{path} line {int(rows.index[empty][0]) + 2}: empty ImageID; {fix}")
    if rows["ImageID"].duplicated().any():
        name = rows.loc[rows["ImageID"].duplicated(), "ImageID"].iloc[0]
        raise CxrsynError(f"{path}: image {name} has more than one row; {fix}")
    return rows


def parse_labels(values: pd.Series, path: Path) -> pd.Series:
    """Each ``Labels`` cell (a Python list literal, ``['normal']``) as a set of stripped, non-empty labels."""
    parsed = []
    for row, text in zip(values.index, values, strict=True):
        try:
            items = ast.literal_eval(text)
            if not isinstance(items, list | tuple):
                raise ValueError
        except (ValueError, SyntaxError):
            raise CxrsynError(
                f"{path} line {int(row) + 2}: Labels {text[:60]!r} is not a list of labels; re-download it ({WHERE})"
            ) from None
        parsed.append(frozenset(str(item).strip() for item in items) - {""})
    return pd.Series(parsed, index=values.index, dtype=object)


def _with_attributes(table: pd.DataFrame, found: dict[str, Any]) -> pd.DataFrame:
    study_year = pd.to_numeric(table["StudyDate_DICOM"].str[:4], errors="coerce")
    birth = pd.to_numeric(table["PatientBirth"], errors="coerce")
    table = with_age(table, study_year - birth)
    projection = table["Projection"].fillna("")
    table = table.assign(
        **{
            PATIENT_COLUMN: table["PatientID"].fillna(table["ImageID"]),  # no id: its own patient
            "study": table["StudyID"].fillna(""),
            "sex": normalized_sex(table["PatientSex_DICOM"]),
            "view": projection.replace({"AP_horizontal": "AP"}),
            "projection": projection,
            "label_method": table["MethodLabel"].map(METHODS).fillna(table["MethodLabel"].fillna("")),
            "pediatric": table["Pediatric"].fillna("").eq("PED"),
            "manufacturer": table["Manufacturer_DICOM"].fillna(""),
            "findings": ["|".join(sorted(names)) for names in table["labels"]],
        }
    )
    found["age_flags"] = value_counts(table.loc[table["age_flag"] != "", "age_flag"])
    return table
