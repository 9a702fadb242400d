"""What the readers of label-table datasets (NIH ChestX-ray14, CheXpert, PadChest) share: reading the table as
its owner ships it, finding the image files it names, checking them, and the attributes every sample carries
(``patient``, ``age``, ``age_flag``, ``age_band``, ``sex``, ``view``).

Images are checked the way Kermany's are: a selected row whose file is missing, empty or not an image Pillow
can open follows ``on_bad_file``. Pixels are decoded later, by the cache or the dataset, where a truncated file
follows ``on_bad_file`` too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.data.images import DEFAULT_MAX_IMAGE_PIXELS, check_image_header, too_many_pixels
from cxrsyn.data.rsna import age_band, parse_age
from cxrsyn.data.sources import FILE_COLUMN, BadFiles

ATTRIBUTE_COLUMNS = (PATIENT_COLUMN, "age", "age_flag", "age_band", "sex", "view")
IGNORED_DIRS = ("__MACOSX",)


def read_label_table(
    path: Path,
    required: Sequence[str],
    dataset: str,
    fix: str,
    usecols: Iterable[str] | None = None,
    dtype: Mapping[str, Any] | type | None = None,
) -> pd.DataFrame:
    """A CSV (or .csv.gz) label table; an unreadable file or missing columns stop with one line."""
    if not path.is_file():
        raise CxrsynError(f"{path} is missing; {fix}")
    wanted = None if usecols is None else set(usecols) | set(required)
    try:
        table = pd.read_csv(
            path,
            usecols=None if wanted is None else (lambda column: column in wanted),
            dtype=dtype,
            low_memory=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as error:
        reason = " ".join(str(error).split())[:160]
        raise CxrsynError(f"{path} is not a readable CSV ({reason}); {fix}") from None
    require_columns(table, path, required, dataset, fix)
    return table


def require_columns(table: pd.DataFrame, path: Path, required: Sequence[str], dataset: str, fix: str) -> None:
    missing = [column for column in required if column not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns)) or "none"
        raise CxrsynError(
            f"{path} lacks column(s) {', '.join(missing)} (found {found}); this is not the {dataset} "
            f"label table, {fix}"
        )


def find_images(root: Path, suffixes: Sequence[str], max_depth: int = 2) -> tuple[dict[str, str], list[str]]:
    """Image files by name (``name -> path relative to root``) in ``root`` and folders up to ``max_depth``
    below it, and the relative paths of files whose name was already found (the first, in sorted order, wins)."""
    files: dict[str, str] = {}
    duplicates: list[str] = []
    suffixes = tuple(suffixes)
    top = str(root)
    for folder, dirnames, filenames in os.walk(top):
        relative = os.path.relpath(folder, top)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        dirnames[:] = (
            []
            if depth >= max_depth
            else sorted(d for d in dirnames if d not in IGNORED_DIRS and not d.startswith("."))
        )
        prefix = "" if relative == "." else relative + os.sep
        for filename in sorted(filenames):
            if filename.startswith("._") or not filename.lower().endswith(suffixes):
                continue
            if filename in files:
                duplicates.append(prefix + filename)
            else:
                files[filename] = prefix + filename
    return files, duplicates


def check_files(
    table: pd.DataFrame,
    root: Path,
    bad: BadFiles,
    show_progress: bool = False,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> pd.DataFrame:
    """The rows whose ``file`` exists, is not empty and starts like an image (a PNG of at most ``max_pixels``
    pixels); the others go to ``bad``."""
    keep = []
    for file, path in tqdm(
        table[[FILE_COLUMN, PATH_COLUMN]].itertuples(index=False),
        total=len(table),
        desc=f"{bad.source}: image headers",
        unit="img",
        disable=not show_progress or len(table) < 1000,
        leave=False,
    ):
        problem = header_problem(file, max_pixels)
        if problem:
            bad(path, problem)
        keep.append(not problem)
    return table[keep]


_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def header_problem(file: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """Why ``file`` cannot be an image ("" when its header looks right). PNG and JPEG headers are checked
    here with one read (the tables name tens of thousands; a PNG's size is in it, a JPEG's is checked when
    decoded); other formats are opened by Pillow."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(24)
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"cannot be read ({error.strerror or type(error).__name__})"
    if not head:
        return "empty (0 bytes)"
    if head.startswith(_PNG):
        if head[12:16] != b"IHDR" or int.from_bytes(head[16:20], "big") == 0:
            return "not a readable image (broken PNG header)"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        return too_many_pixels(width, height, max_pixels) or ""
    if head.startswith(_JPEG):
        return ""
    try:
        check_image_header(file, max_pixels)
    except CxrsynError as error:
        return str(error).split("; ")[0].removeprefix(f"image {file} ")
    return ""


def missing_files(
    table: pd.DataFrame, names: pd.Series, files: Mapping[str, str], label_file: str, bad: BadFiles
) -> pd.Series:
    """True for rows whose image ``names`` has a file; each other row goes to ``bad``."""
    present = names.isin(files.keys())
    for name, path in zip(names[~present], table.loc[~present, PATH_COLUMN], strict=True):
        bad(path, f"{name} is listed in {label_file} but its image file is missing")
    return present


def with_age(table: pd.DataFrame, years: Iterable[object]) -> pd.DataFrame:
    """``age`` (whole years), ``age_flag`` (``missing``, ``impossible`` over 120, else empty) and ``age_band``,
    parsed as RSNA's are."""
    parsed = [parse_age("" if pd.isna(value) else value) for value in years]
    table = table.assign(
        age=pd.array([age for age, _ in parsed], dtype="Int64"),
        age_flag=[flag for _, flag in parsed],
    )
    table["age_band"] = [
        age_band(age) if flag == "" else "unknown"
        for age, flag in zip(table["age"], table["age_flag"], strict=True)
    ]
    return table


def normalized_sex(values: pd.Series, mapping: Mapping[str, str] | None = None) -> pd.Series:
    """``M``/``F`` as RSNA writes them (``mapping`` renames a dataset's own words); missing values become
    empty, other values (PadChest's ``O``) are kept as written."""
    text = values.fillna("").astype(str).str.strip()
    if mapping:
        text = text.replace(dict(mapping))
    return text.str.upper()


def value_counts(values: pd.Series) -> dict[str, int]:
    """Counts of every value (missing as ``(none)``), sorted by value: for ``found``."""
    text = values.fillna("(none)").astype(str).replace("", "(none)")
    return {str(key): int(count) for key, count in text.value_counts().sort_index().items()}


def choices(value: str | Sequence[str] | None, allowed: Sequence[str], key: str, dataset: str) -> list[str]:
    """A config value that names one or several of ``allowed`` (null: all), checked."""
    chosen = list(allowed) if value is None else ([value] if isinstance(value, str) else list(value))
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise CxrsynError(
            f"data.{key}={value!r} for {dataset}; use one or a list of {', '.join(allowed)} (null: all)"
        )
    return chosen
