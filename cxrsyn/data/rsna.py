"""RSNA Pneumonia Detection Challenge (Kaggle 2018), read exactly as downloaded.

```
ROOT/stage_2_train_labels.csv          patientId,x,y,width,height,Target   one row per box, unsorted
ROOT/stage_2_detailed_class_info.csv   patientId,class                     one row per label row
ROOT/stage_2_train_images/<patientId>.dcm
```
One sample per patient. Selections:

- ``normal_vs_opacity`` (the paper's, 14,863): class ``Normal`` (label 0) vs ``Lung Opacity`` (label 1);
  the 11,821 ``No Lung Opacity / Not Normal`` patients are left out. Needs the detailed class file.
- ``target`` (all 26,684): ``Target`` 0 vs 1.

Every sample carries ``age`` (whole years; ``age_flag`` says ``impossible`` for ages over 120, which RSNA has
five of, or ``missing``), ``sex`` and ``view`` (PA/AP) from the DICOM header, ``detailed_class`` and
``n_boxes``. Headers are read once in parallel and kept in the cache folder, or taken from a table
(``header_table``, e.g. torchxrayvision's ``kaggle_stage_2_train_images_dicom_headers.csv.gz``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import read_csv, write_csv
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.core.parallel import chunked, map_chunks
from cxrsyn.data.dicom import DicomDecodeError, read_dataset
from cxrsyn.data.selection import patient_split
from cxrsyn.data.sources import (
    FILE_COLUMN,
    BadFiles,
    DatasetFolder,
    PublishedCounts,
    SourceIndex,
    label_counts,
    missing_root_error,
)

LABELS_NAME = "stage_2_train_labels.csv"
CLASSES_NAME = "stage_2_detailed_class_info.csv"
IMAGES_DIRNAME = "stage_2_train_images"
SELECTIONS = ("normal_vs_opacity", "target")
CLASS_NORMAL, CLASS_OPACITY, CLASS_NOT_NORMAL = "Normal", "Lung Opacity", "No Lung Opacity / Not Normal"
MAX_PLAUSIBLE_AGE = 120
HEADER_FIELDS = ("PatientAge", "PatientSex", "ViewPosition")
DOWNLOAD_COMMAND = "python -m cxrsyn.data download rsna --root DIR"
NIH_OVERLAP_NOTE = (
    "RSNA Pneumonia Detection Challenge images are a subset of NIH ChestX-ray14 (re-read by radiologists): "
    "results on nih and rsna share images and patients and are not independent evidence"
)
PUBLISHED_COUNTS = {
    "target": {"n": 26684, "n_pos": 6012, "n_neg": 20672},
    "normal_vs_opacity": {"n": 14863, "n_pos": 6012, "n_neg": 8851},
}


@dataclass
class RSNA(DatasetFolder):
    """RSNA Pneumonia Detection Challenge (Shih et al., Radiology: Artificial Intelligence 2019; Kaggle 2018):
    the challenge's labelled training images as a test (or training) source."""

    selection: str = "normal_vs_opacity"
    view: str | Sequence[str] | None = None  # PA, AP or both (null)
    header_table: str | None = None
    workers: int | None = None
    show_progress: bool = True
    # patients split into train (a seeded hash of patientId below split_fraction) and test: train on
    # split=train, test on split=test, never sharing a patient; the other side's patients are listed in the
    # run folder (held_out/rsna.txt)
    split: str = "all"
    split_fraction: float = 0.2
    split_seed: int = 0

    kind = "rsna"

    @property
    def name(self) -> str:
        return "rsna"

    def missing_root(self) -> CxrsynError:
        return missing_root_error(self.root, "RSNA", DOWNLOAD_COMMAND, "CXRSYN_RSNA_ROOT")

    def published_counts(self) -> PublishedCounts | None:
        if self.view is not None:
            return None
        return PublishedCounts(
            {"all": dict(PUBLISHED_COUNTS[self.selection])}, f"RSNA selection {self.selection}"
        )

    def index(self) -> SourceIndex:
        self.check()
        root = Path(self.root)
        if self.selection not in SELECTIONS:
            raise CxrsynError(
                f"data.selection={self.selection!r} for RSNA; use one of {', '.join(SELECTIONS)}"
            )
        bad = BadFiles(self.on_bad_file, "RSNA")
        patients, found = read_labels(root / LABELS_NAME)
        classes = root / CLASSES_NAME
        if classes.is_file():
            patients = _join_classes(patients, classes, bad)
            found["classes"] = patients["detailed_class"].value_counts().to_dict()
        elif self.selection == "normal_vs_opacity":
            raise CxrsynError(
                f"selection normal_vs_opacity (the paper's 14,863) needs {classes}, which is missing; get the "
                f"full competition data (`{DOWNLOAD_COMMAND}`) or use data.selection=target (all 26,684)"
            )
        else:
            patients["detailed_class"] = ""

        patients = self._attach_files(patients, root, bad, found)
        if self.selection == "normal_vs_opacity":
            patients = patients[patients["detailed_class"].isin([CLASS_NORMAL, CLASS_OPACITY])]
        patients = patients.reset_index(drop=True)
        headers = self._headers(patients, bad)
        has_header = patients["patient_id"].isin(headers["patient_id"])
        if self.header_table:  # without a table, the files whose header failed were reported by _headers
            for path in patients.loc[~has_header, PATH_COLUMN]:
                bad(path, f"no row in the header table {self.header_table}")
        table = patients[has_header].merge(headers, on="patient_id", how="inner")
        table = _with_attributes(table, found)
        views = self._views()
        if views is not None:
            found["view_filter"] = sorted(views)
            table = table[table["view"].isin(views)]
        table = table.sort_values("patient_id", kind="stable").reset_index(drop=True)
        table = table.rename(columns={"patient_id": PATIENT_COLUMN})  # the one patient column of every source
        in_split = patient_split(
            table[PATIENT_COLUMN], self.split, self.split_fraction, self.split_seed, "RSNA"
        )
        held_out = sorted(table.loc[~in_split, PATIENT_COLUMN])
        if self.split != "all":
            found["split"] = {
                "split": self.split,
                "fraction_train": self.split_fraction,
                "seed": self.split_seed,
                "method": "patient in train when sha256(seed, patientId) / 2**64 < fraction_train",
                "held_out_patients": len(held_out),
            }
        table = table[in_split].reset_index(drop=True)
        found["selection"] = self.selection
        found["note"] = NIH_OVERLAP_NOTE
        columns = [FILE_COLUMN, PATH_COLUMN, LABEL_COLUMN, PATIENT_COLUMN, "detailed_class", "n_boxes"]
        columns += ["age", "age_flag", "age_band", "sex", "view"]
        return SourceIndex(table[columns], bad.skipped, found, held_out)

    def _views(self) -> set[str] | None:
        if self.view is None:
            return None
        views = {self.view} if isinstance(self.view, str) else set(self.view)
        unknown = views - {"PA", "AP"}
        if unknown:
            raise CxrsynError(f"data.view={sorted(unknown)} for RSNA; use PA, AP, [PA, AP] or null (both)")
        return views

    def _attach_files(self, patients: pd.DataFrame, root: Path, bad: BadFiles, found: dict) -> pd.DataFrame:
        images = root / IMAGES_DIRNAME
        if not images.is_dir():
            raise CxrsynError(
                f"{images} is missing; the RSNA root needs the {IMAGES_DIRNAME}/ folder from the download "
                f"(`{DOWNLOAD_COMMAND}`)"
            )
        with os.scandir(images) as entries:
            files = {
                entry.name[: -len(".dcm")]: entry for entry in entries if entry.name.lower().endswith(".dcm")
            }
        found["image_files"] = len(files)
        labelled = set(patients["patient_id"])
        for patient_id in sorted(set(files) - labelled):
            bad(f"{IMAGES_DIRNAME}/{patient_id}.dcm", f"no label row in {LABELS_NAME}")
        has_file = patients["patient_id"].isin(files.keys())
        for patient_id in patients.loc[~has_file, "patient_id"]:
            bad(
                f"{IMAGES_DIRNAME}/{patient_id}.dcm",
                f"patient {patient_id} is in {LABELS_NAME} but has no DICOM file",
            )
        patients = patients[has_file].copy()
        patients[PATH_COLUMN] = [
            f"{IMAGES_DIRNAME}/{patient_id}.dcm" for patient_id in patients["patient_id"]
        ]
        patients[FILE_COLUMN] = [str(images / f"{patient_id}.dcm") for patient_id in patients["patient_id"]]
        empty = [file for file in patients[FILE_COLUMN] if os.path.getsize(file) == 0]
        for file in empty:
            bad(Path(file).relative_to(root), "empty file (0 bytes)")
        return patients[~patients[FILE_COLUMN].isin(empty)]

    def _headers(self, patients: pd.DataFrame, bad: BadFiles) -> pd.DataFrame:
        if self.header_table:
            return read_header_table(self.header_table)
        files = patients[FILE_COLUMN].tolist()
        cache_file = self._header_cache_file(files)
        if cache_file is not None and cache_file.is_file():
            headers = read_csv(cache_file, dtype=str, keep_default_na=False)
        else:
            rows: list[dict[str, str]] = []
            chunks = chunked(files, 256)
            for _, result in map_chunks(
                read_header_rows,
                chunks,
                self.workers,
                desc="rsna: DICOM headers",
                show_progress=self.show_progress,
            ):
                rows.extend(result)
            headers = pd.DataFrame(rows, columns=["file", "error", *HEADER_FIELDS])
            if cache_file is not None and not (headers["error"] != "").any():
                write_csv(cache_file, headers)
        for file, error in headers.loc[headers["error"] != "", ["file", "error"]].itertuples(index=False):
            bad(Path(file).relative_to(self.root), error)
        headers = headers[headers["error"] == ""]
        headers = headers.assign(patient_id=[Path(file).stem for file in headers["file"]])
        return headers[["patient_id", *HEADER_FIELDS]]

    def _header_cache_file(self, files: Sequence[str]) -> Path | None:
        if not self.cache_dir:
            return None
        digest = hashlib.sha256()
        for file in files:
            stat = os.stat(file)
            digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return Path(self.cache_dir) / f"rsna-headers-{digest.hexdigest()[:16]}.csv"


def read_labels(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per patient: ``patient_id``, ``label`` (Target), ``n_boxes``; plus counts of what was read."""
    if not path.is_file():
        raise CxrsynError(f"{path} is missing; the RSNA root needs the labels file from `{DOWNLOAD_COMMAND}`")
    try:
        rows = pd.read_csv(path, dtype={"patientId": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CxrsynError(f"{path} is not a readable CSV ({error}); re-download it") from None
    _require_columns(rows, path, ("patientId", "Target"))
    target = pd.to_numeric(rows["Target"], errors="coerce")
    if target.isna().any() or not target.isin([0, 1]).all():
        line = int(rows.index[target.isna() | ~target.isin([0, 1])][0]) + 2
        raise CxrsynError(f"{path} line {line}: Target must be 0 or 1; re-download the labels file")
    rows = rows.assign(Target=target.astype(int))
    per_patient = rows.groupby("patientId", sort=True)["Target"].agg(["min", "max", "sum"])
    mixed = per_patient.index[per_patient["min"] != per_patient["max"]]
    if len(mixed):
        raise CxrsynError(
            f"{path}: patient {mixed[0]} has rows with Target 0 and Target 1; re-download the labels file"
        )
    patients = pd.DataFrame(
        {
            "patient_id": per_patient.index,
            LABEL_COLUMN: per_patient["max"].to_numpy(),
            "n_boxes": per_patient["sum"].to_numpy(),
        }
    )
    found = {
        "label_rows": int(len(rows)),
        "box_rows": int(rows["Target"].sum()),
        "patients": int(len(patients)),
        "patients_positive": int(patients[LABEL_COLUMN].sum()),
    }
    return patients, found


def _join_classes(patients: pd.DataFrame, path: Path, bad: BadFiles) -> pd.DataFrame:
    rows = pd.read_csv(path, dtype=str)
    _require_columns(rows, path, ("patientId", "class"))
    per_patient = rows.groupby("patientId")["class"].agg(lambda values: sorted(set(values)))
    conflicting = per_patient[per_patient.map(len) > 1]
    if len(conflicting):
        raise CxrsynError(
            f"{path}: patient {conflicting.index[0]} has classes {conflicting.iloc[0]}; re-download it"
        )
    classes = per_patient.map(lambda values: values[0])
    patients = patients.assign(detailed_class=patients["patient_id"].map(classes))
    for patient_id in patients.loc[patients["detailed_class"].isna(), "patient_id"]:
        bad(f"{CLASSES_NAME}:{patient_id}", f"patient {patient_id} has no row in {CLASSES_NAME}")
    patients = patients[patients["detailed_class"].notna()]
    disagree = patients[(patients["detailed_class"] == CLASS_OPACITY) != (patients[LABEL_COLUMN] == 1)]
    if len(disagree):
        row = disagree.iloc[0]
        raise CxrsynError(
            f"{path}: patient {row['patient_id']} is {row['detailed_class']!r} but has Target {row[LABEL_COLUMN]} in "
            f"{LABELS_NAME}; the two files come from different releases, re-download both"
        )
    return patients


def _require_columns(rows: pd.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [column for column in required if column not in rows.columns]
    if missing:
        raise CxrsynError(
            f"{path} lacks column(s) {', '.join(missing)} (found {', '.join(map(str, rows.columns))}); "
            "this is not the RSNA challenge file, re-download it"
        )


def read_header_rows(files: Sequence[str]) -> list[dict[str, str]]:
    """Worker: the DICOM header fields of each file, or the reason it cannot be read."""
    rows = []
    for file in files:
        row = {"file": file, "error": "", **dict.fromkeys(HEADER_FIELDS, "")}
        try:
            dataset = read_dataset(file, stop_before_pixels=True)
            row.update({name: str(dataset.get(name, "") or "").strip() for name in HEADER_FIELDS})
        except (DicomDecodeError, OSError) as error:
            row["error"] = str(error).split(": ", 1)[-1].rsplit("; ", 1)[0]
        rows.append(row)
    return rows


def read_header_table(path: str | os.PathLike) -> pd.DataFrame:
    """A header table (torchxrayvision's format: PatientID or Filename, PatientAge, PatientSex, ViewPosition)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "PatientID" in table.columns:
        ids = table["PatientID"]
    elif "Filename" in table.columns:
        ids = table["Filename"].map(lambda name: Path(name).stem)
    else:
        raise CxrsynError(
            f"header table {path} needs a PatientID or Filename column; found {list(table.columns)}"
        )
    _require_columns(table, Path(path), HEADER_FIELDS)
    return table.assign(patient_id=ids)[["patient_id", *HEADER_FIELDS]].drop_duplicates("patient_id")


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"": 1.0, "Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def parse_age(value: object) -> tuple[int | None, str]:
    """Whole years from RSNA's plain ``'51'`` or a DICOM age string ``'051Y'``; a flag for bad values."""
    match = _AGE.match(str(value))
    if not match:
        return None, "missing"
    years = int(float(match[1]) * _AGE_UNIT_YEARS[match[2].upper()])
    return years, ("impossible" if years > MAX_PLAUSIBLE_AGE else "")


AGE_BANDS = ((0, 17), (18, 39), (40, 64), (65, MAX_PLAUSIBLE_AGE))


def age_band(years: int) -> str:
    """The subgroup band of an age in whole years: 0-17, 18-39, 40-64 or 65+."""
    for low, high in AGE_BANDS:
        if low <= years <= high:
            return f"{low}+" if high == MAX_PLAUSIBLE_AGE else f"{low}-{high}"
    return "unknown"


def _with_attributes(table: pd.DataFrame, found: dict[str, Any]) -> pd.DataFrame:
    parsed = [parse_age(value) for value in table["PatientAge"]]
    table = table.assign(
        age=pd.array([age for age, _ in parsed], dtype="Int64"),
        age_flag=[flag for _, flag in parsed],
        sex=table["PatientSex"].str.upper().str.strip(),
        view=table["ViewPosition"].str.upper().str.strip(),
    )
    table["age_band"] = [
        age_band(age) if flag == "" else "unknown"
        for age, flag in zip(table["age"], table["age_flag"], strict=True)
    ]
    flagged = table[table["age_flag"] != ""]
    found["age_flags"] = {
        f"{row.patient_id}": f"{row.age_flag} ({row.PatientAge!s})" for row in flagged.itertuples(index=False)
    }
    return table


__all__ = ["RSNA", "label_counts", "parse_age", "read_labels"]
