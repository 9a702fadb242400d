"""Data sources: where a set of labelled images comes from, what was found there and what was selected.

Every source ends as a ``SourceIndex``: a table of samples (``file`` absolute, ``path`` as listed, ``label``,
then the source's attributes), the files it left out with their reasons, and counts of what it read.
``prepare()`` makes the source ready (the phantom generates itself) and runs once, on one process;
``index()`` reads the table. Files that cannot be used follow ``on_bad_file``: ``error`` stops with one line
naming the file, the reason and the fix; ``skip`` leaves the file out and lists it with its reason.
``cache: true`` decodes every image once into a compact store (``cxrsyn.data.cache``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import (
    LABEL_COLUMN,
    PATH_COLUMN,
    PATIENT_COLUMN,
    missing_folder_error,
    read_manifest,
)
from cxrsyn.core.paths import normalize_relative, outside_root
from cxrsyn.data.images import DEFAULT_MAX_IMAGE_PIXELS, DeepWindow, check_image_header, deep_range_warning
from cxrsyn.phantom.grid import DEFAULT_ATTRIBUTES
from cxrsyn.phantom.simulator import PhantomSpec, write_phantom_dataset

FILE_COLUMN = "file"
log = logging.getLogger(__name__)
ON_BAD_FILE = ("error", "skip")


@dataclass(frozen=True)
class PublishedCounts:
    """What a dataset's owners or the literature report for a selection: per part (``all`` or a split) the
    counts ``n``, ``n_pos`` and ``n_neg``, and where they come from (``python -m cxrsyn.data summarize
    verify=true`` compares them with what was read)."""

    parts: dict[str, dict[str, int]]
    reference: str


@dataclass
class SourceIndex:
    table: pd.DataFrame
    skipped: list[dict[str, str]] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)
    held_out: list[str] = field(default_factory=list)  # patients a patient split left out of this selection


class BadFiles:
    """Applies a source's ``on_bad_file`` policy: raise one line, or record ``{path, reason}`` and go on."""

    def __init__(self, policy: str, source: str):
        if policy not in ON_BAD_FILE:
            raise CxrsynError(f"on_bad_file={policy!r} for {source}; use one of {', '.join(ON_BAD_FILE)}")
        self.policy = policy
        self.source = source
        self.skipped: list[dict[str, str]] = []

    def __call__(self, path: str | Path, reason: str) -> None:
        if self.policy == "error":
            raise CxrsynError(
                f"{path}: {reason}. Replace or re-download it, or set on_bad_file=skip for {self.source} "
                "to leave it out (skipped files are listed in the summary and in metrics.json)"
            )
        self.skipped.append({"path": str(path), "reason": reason})


@dataclass
class DatasetFolder:
    """A dataset folder (``images/`` + ``manifest.csv``). ``crop_bottom_fraction`` crops on the fly.
    ``exclude_file`` lists paths (one per line, as in the ``path`` column) to leave out, e.g. the images
    ``python -m cxrsyn.audit`` flagged (see ``apply_exclude_file``)."""

    root: str
    crop_bottom_fraction: float = 0.0
    on_bad_file: str = "error"
    cache: bool = False
    cache_dir: str | None = None
    exclude_file: str | None = None
    # as a training source only (cxrsyn.data.selection): a seeded subsample stratified by label and
    # attributes, then duplication; the run folder's train_files.csv lists the images used
    max_per_class: int | None = None
    max_total: int | None = None
    subsample_seed: int | None = None  # null: the run's seed
    stratify_by: list[str] | None = (
        None  # null: the attributes the source has of cxrsyn.data.selection.STRATIFY_BY
    )
    repeat: int | None = None  # whole copies of the selection (the count-matched duplicate control)
    repeat_to: int | None = None  # or copies up to exactly this many images
    part: str | None = None  # its name in a mix of training sources (data.parts.<name>), set by composition
    # files listed (or found through symlinks) outside ``root`` are refused unless this is true; the run then
    # records that it allowed them (metrics.json data: found.allow_outside_root, found.outside_root)
    allow_outside_root: bool = False
    # how 16-bit images become [0, 1] (cxrsyn.data.images.DeepWindow): full_range divides by 65535, min_max
    # and percentile stretch each image (10- or 12-bit values in 16-bit PNGs need one of those)
    window: str = "full_range"
    window_percentiles: Sequence[float] = (0.5, 99.5)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are bad files (decompression bombs)

    kind = "folder"

    def __post_init__(self) -> None:
        fraction = self.crop_bottom_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise CxrsynError(
                f"crop_bottom_fraction={fraction!r} of {self.root} must be a number in [0, 1) (0.3 cuts the "
                "bottom 30%); fix the data config's crop_bottom_fraction"
            )

    SELECTION_FIELDS = ("max_per_class", "max_total", "repeat", "repeat_to")

    @property
    def label(self) -> str:
        """How summaries name the source: its part in a mix, else its root."""
        return self.part or str(self.root)

    @property
    def name(self) -> str:
        return Path(self.root).name

    def check(self) -> None:
        """Cheap checks before any source does work: a missing root stops the run at once, not after the
        other sources have been generated and decoded."""
        if not Path(self.root).is_dir():
            raise self.missing_root()

    def missing_root(self) -> CxrsynError:
        """The one-line error for a root that does not exist; readers of downloaded datasets say where to
        get them."""
        return missing_folder_error(self.root)

    def prepare(self) -> None:
        """Nothing to make."""

    def deep_window(self) -> DeepWindow:
        """How this source's 16-bit images become [0, 1] (``DeepWindow``: ``window``, ``window_percentiles``)."""
        return DeepWindow(self.window, tuple(self.window_percentiles))

    def published_counts(self) -> PublishedCounts | None:
        """The published counts of what this source selects, or None when there are none to compare with;
        readers of public datasets override it."""
        return None

    def index(self) -> SourceIndex:
        window = self.deep_window()  # a bad window setting stops here, before any work
        bad = BadFiles(self.on_bad_file, f"dataset folder {self.root}")
        table = read_manifest(self.root, self.allow_outside_root)
        table.insert(0, FILE_COLUMN, [str(Path(self.root) / path) for path in table[PATH_COLUMN]])
        with_patients(table)
        keep, deep = [], None
        for file in table[FILE_COLUMN]:
            try:
                mode = check_image_header(file, self.max_image_pixels)
                keep.append(True)
                deep = deep or (file if mode and mode.startswith("I;16") else None)
            except CxrsynError as error:
                bad(file, str(error).split("; ")[0].removeprefix(f"image {file} "))
                keep.append(False)
        found: dict[str, Any] = {"manifest_rows": len(table)}
        warning = deep_range_warning(deep, window) if deep else None
        if warning:  # the first 16-bit image stands for the folder: one decode, one line, also in the summary
            log.warning(warning)
            found["window_warning"] = warning
        return SourceIndex(table[keep].reset_index(drop=True), bad.skipped, found)


@dataclass
class PhantomFolder(DatasetFolder):
    """A phantom dataset folder, generated on first use and regenerated when its settings change."""

    domain: str = "generator_like"
    n_per_class: int = 150
    seed: int = 0
    image_size: int = 256
    shortcut_strength: float = 0.5
    framing_shortcut: bool = False
    watermark_size: float = 0.045
    watermark_shape: str = "sparkle"
    watermark_rate: float = 0.5
    field_of_view: str = "extended"
    bottom_mark_rate: float = 0.0
    attributes: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))

    kind = "phantom"

    def spec(self) -> PhantomSpec:
        # every PhantomSpec field but its version, which belongs to the code, not to the config
        values = {f.name: getattr(self, f.name) for f in fields(PhantomSpec) if f.name != "version"}
        values["attributes"] = {name: list(options) for name, options in self.attributes.items()}
        return PhantomSpec(**values)

    def check(self) -> None:
        """Nothing to check: the folder is generated when missing."""

    def prepare(self) -> None:
        write_phantom_dataset(self.root, self.spec())


def with_patients(table: pd.DataFrame) -> pd.DataFrame:
    """Give ``table`` a ``patient`` column (in place) where it has none: each image its own patient.
    Missing values in an existing column are filled the same way."""
    if PATIENT_COLUMN not in table.columns:
        table[PATIENT_COLUMN] = table[PATH_COLUMN].astype(str)
    else:
        table[PATIENT_COLUMN] = table[PATIENT_COLUMN].fillna(table[PATH_COLUMN]).astype(str)
    return table


def read_source(source: DatasetFolder) -> SourceIndex:
    """``source.index()`` with its files checked to lie inside its root (``check_inside_root``) and its
    ``exclude_file`` applied: how every step reads a source."""
    return apply_exclude_file(source, check_inside_root(source, source.index()))


def check_inside_root(source: DatasetFolder, index: SourceIndex) -> SourceIndex:
    """Refuse (one line naming the first one) samples whose file resolves outside the source's root (a label
    table naming ``../x``, a symlink out of the folder), unless ``allow_outside_root``; then ``found`` records
    that they were allowed and how many there were."""
    files = index.table[FILE_COLUMN] if FILE_COLUMN in index.table.columns else []
    outside = outside_root(source.root, files)
    if not source.allow_outside_root:
        if outside:
            row = index.table.iloc[outside[0]]
            raise CxrsynError(
                f"{source.kind} at {source.root}: {row[PATH_COLUMN]} resolves outside the dataset root "
                f"({len(outside)} file(s) do); keep the images inside {source.root}, or set "
                "allow_outside_root=true on the data config"
            )
        return index
    found = {**index.found, "allow_outside_root": True, "outside_root": len(outside)}
    return SourceIndex(index.table, index.skipped, found, index.held_out)


def apply_exclude_file(source: DatasetFolder, index: SourceIndex) -> SourceIndex:
    """Leave out the samples whose ``path`` the source's ``exclude_file`` lists (blank lines and ``#``
    comments ignored); ``found`` counts them (``excluded``) and the listed paths no sample has
    (``exclude_unmatched``)."""
    if not source.exclude_file:
        return index
    file = Path(source.exclude_file)
    if not file.is_file():
        raise CxrsynError(
            f"exclude_file={file} does not exist; give a file of image paths (one per line), "
            "e.g. the exclude.txt python -m cxrsyn.audit wrote, or null"
        )
    lines = (line.strip() for line in file.read_text().splitlines())
    listed = {normalize_relative(line) for line in lines if line and not line.startswith("#")}
    drop = index.table[PATH_COLUMN].astype(str).isin(listed)
    found = {
        **index.found,
        "exclude_file": str(file),
        "excluded": int(drop.sum()),
        "exclude_unmatched": len(listed - set(index.table[PATH_COLUMN].astype(str))),
    }
    return SourceIndex(index.table[~drop].reset_index(drop=True), index.skipped, found, index.held_out)


def label_counts(table: pd.DataFrame) -> dict[str, int]:
    n_pos = int((table[LABEL_COLUMN] == 1).sum())
    return {"n": int(len(table)), "n_pos": n_pos, "n_neg": int(len(table)) - n_pos}


def missing_root_error(root: str | Path, dataset: str, download: str, env: str) -> CxrsynError:
    return CxrsynError(
        f"{dataset} root {root} does not exist: download it with `{download}`, then point data.root "
        f"(or the test set's root, or ${env}) at the folder"
    )
