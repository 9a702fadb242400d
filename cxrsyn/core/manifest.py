"""The dataset-folder format shared by every data source.

A dataset folder holds ``images/`` and ``manifest.csv``. Required columns: ``path`` (relative to the folder)
and ``label`` (1 = pneumonia, 0 = normal). Optional ``patient``: images sharing it come from one patient
(bootstrap CIs and the train/validation split keep them together; default: each image its own patient).
Any other column is an attribute carried with every sample (sex, age, projection, generator, prompt, ...).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError

MANIFEST_NAME = "manifest.csv"
IMAGES_DIRNAME = "images"
PATH_COLUMN = "path"
LABEL_COLUMN = "label"
# who the image belongs to: images of one patient are resampled together (optional; default: the path)
PATIENT_COLUMN = "patient"
REQUIRED_COLUMNS = (PATH_COLUMN, LABEL_COLUMN)
POSITIVE_LABEL = 1  # pneumonia
NEGATIVE_LABEL = 0  # normal
# Attributes that must survive a CSV round trip as text (e.g. sex "F" is never parsed as anything else).
_TEXT_DTYPES = {PATH_COLUMN: str, PATIENT_COLUMN: str}


def manifest_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / MANIFEST_NAME


def missing_folder_error(folder: str | os.PathLike) -> CxrsynError:
    return CxrsynError(
        f"dataset folder {folder} does not exist: create it (images/ + {MANIFEST_NAME}) "
        "or point the data config at an existing folder"
    )


def read_manifest(folder: str | os.PathLike) -> pd.DataFrame:
    """Read and validate ``folder/manifest.csv``; labels come back as int 0/1, paths as given.

    Raises a one-line ``CxrsynError`` naming the folder or file and the fix for every known defect.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise missing_folder_error(folder)
    path = manifest_path(folder)
    if not path.is_file():
        raise CxrsynError(
            f"{path} is missing: a dataset folder needs {MANIFEST_NAME} with columns "
            f"{', '.join(REQUIRED_COLUMNS)}"
        )
    try:
        table = pd.read_csv(path, dtype=_TEXT_DTYPES, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CxrsynError(f"{path} is not a readable CSV ({error}); rewrite it as UTF-8 CSV") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise CxrsynError(
            f"{path} lacks required column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}. "
            f"Add them: {PATH_COLUMN} = image path relative to the folder, {LABEL_COLUMN} = 1 pneumonia / 0 normal"
        )
    if table.empty:
        raise CxrsynError(f"{path} has no rows; a dataset folder needs at least one image per class")
    if table[PATH_COLUMN].isna().any():
        row = int(table.index[table[PATH_COLUMN].isna()][0]) + 2  # +1 header, +1 one-based
        raise CxrsynError(f"{path} line {row}: empty {PATH_COLUMN}; every row needs an image path")
    table[LABEL_COLUMN] = _parse_labels(table[LABEL_COLUMN], path)
    duplicated = table[PATH_COLUMN].duplicated()
    if duplicated.any():
        first = table.loc[duplicated, PATH_COLUMN].iloc[0]
        raise CxrsynError(
            f"{path}: image {first} is listed {int((table[PATH_COLUMN] == first).sum())} times; list each image once"
        )
    return table


def _parse_labels(labels: pd.Series, path: Path) -> pd.Series:
    numeric = pd.to_numeric(labels, errors="coerce")
    bad = numeric.isna() | ~numeric.isin([NEGATIVE_LABEL, POSITIVE_LABEL])
    if bad.any():
        row = int(labels.index[bad][0]) + 2
        values = sorted({str(value) for value in labels[bad]})[:5]
        raise CxrsynError(
            f"{path} line {row}: {LABEL_COLUMN} must be 0 (normal) or 1 (pneumonia), found {', '.join(values)}; "
            f"map the labels to 0/1"
        )
    return numeric.astype(int)


def write_manifest(folder: str | os.PathLike, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> Path:
    """Write ``folder/manifest.csv`` atomically (a crash leaves the old file or the new one, never half)."""
    from cxrsyn.core.secrets import redact_table

    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    table = redact_table(table)  # a prompt or attribute never carries a key into the file
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"manifest rows lack {missing}")
    ordered = list(REQUIRED_COLUMNS) + [c for c in table.columns if c not in REQUIRED_COLUMNS]
    path = manifest_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, newline="") as handle:
        table[ordered].to_csv(handle, index=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    return path
