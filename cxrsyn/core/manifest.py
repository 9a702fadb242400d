"""The dataset-folder format shared by every data source.

A dataset folder holds ``images/`` and ``manifest.csv``. Required columns: ``path`` (relative to the folder)
and ``label`` (1 = pneumonia, 0 = normal). Optional ``patient``: images sharing it come from one patient
(bootstrap CIs and the train/validation split keep them together; default: each image its own patient).
Any other column is an attribute carried with every sample (sex, age, projection, generator, prompt, ...).

Paths are read normalised (``./images//x.png`` is ``images/x.png``). A path that is absolute, contains ``..``
or resolves (through symlinks) outside the folder is refused with one line naming its line, unless the reader
is told ``allow_outside_root``. One file listed twice (under any spelling, or through a symlink) is refused
too, naming both lines; with different labels the line says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import read_csv, write_csv
from cxrsyn.core.paths import RootResolver, normalize_relative, why_outside

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


def read_manifest(folder: str | os.PathLike, allow_outside_root: bool = False) -> pd.DataFrame:
    """Read and validate ``folder/manifest.csv``; labels come back as int 0/1, paths normalised.

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
        table = read_csv(path, dtype=_TEXT_DTYPES, keep_default_na=False, na_values=[""])
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
    table[PATH_COLUMN] = checked_paths(table, folder, path, allow_outside_root)
    return table


def checked_paths(
    table: pd.DataFrame,
    root: str | os.PathLike,
    listed_in: str | os.PathLike,
    allow_outside_root: bool = False,
    first_line: int = 2,
) -> pd.Series:
    """The ``path`` column of ``table`` (paths relative to ``root``, as listed in ``listed_in``; row i is line
    ``first_line + i``) normalised, after refusing (one line naming the line) a path that is absolute,
    contains ``..`` or resolves outside ``root`` (unless ``allow_outside_root``), and a file listed twice."""
    paths = table[PATH_COLUMN].astype(str).map(normalize_relative)
    resolver = RootResolver(root)
    fix = "list images by their path inside the dataset folder, or set allow_outside_root=true on the data config"
    seen: dict[str, int] = {}
    for row, (listed, normal) in enumerate(zip(table[PATH_COLUMN].astype(str), paths, strict=True)):
        line = first_line + row
        file = os.path.join(root, normal)
        if not allow_outside_root:
            reason = why_outside(normal)
            if reason is None and not resolver.is_inside(file):
                reason = f"resolves outside {root} (to {resolver.resolve(file)})"
            if reason:
                raise CxrsynError(f"{listed_in} line {line}: path {listed!r} {reason}; {fix}")
        key = resolver.resolve(file)
        if key in seen:
            first = seen[key]
            labels = (
                table[LABEL_COLUMN].iloc[[first, row]].tolist() if LABEL_COLUMN in table else [None, None]
            )
            spelled = f"{table[PATH_COLUMN].iloc[first]!r} and {listed!r}"
            if labels[0] != labels[1]:
                raise CxrsynError(
                    f"{listed_in} lines {first_line + first} and {line} list one file ({spelled}) with "
                    f"different labels ({labels[0]} and {labels[1]}); keep the row with the right label"
                )
            raise CxrsynError(
                f"{listed_in} lines {first_line + first} and {line} list one file ({spelled}); "
                "list each image once"
            )
        seen[key] = row
    return paths


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
    """Write ``folder/manifest.csv`` atomically (a crash leaves the old file or the new one, never half) and
    spreadsheet-safe (``cxrsyn.core.fileio.write_csv``)."""
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"manifest rows lack {missing}")
    ordered = list(REQUIRED_COLUMNS) + [c for c in table.columns if c not in REQUIRED_COLUMNS]
    return write_csv(manifest_path(folder), table[ordered])
