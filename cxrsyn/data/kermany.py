"""Kermany et al. pediatric chest X-rays ("Chest X-Ray Images (Pneumonia)"), read as users unpack them.

Accepted layouts, found anywhere under ``root``:

- Kaggle ``paultimothymooney/chest-xray-pneumonia``: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``, plus
  a full duplicate tree ``chest_xray/chest_xray/...`` and ``__MACOSX/`` resource forks;
- Mendeley Data v2: ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}``;
- Mendeley Data v3: ``CellData/chest_xray/{train,test}/{NORMAL,PNEUMONIA}`` with ``NORMAL-*``, ``BACTERIA-*``,
  ``VIRUS-*`` names.

``__MACOSX/``, ``._*`` resource forks, ``.DS_Store`` and other non-image files are ignored and counted. When
several trees hold the same images (Kaggle's duplicate), the first is read and the others are reported, so
every image counts once. Each sample carries its ``split`` and ``subtype`` (normal, bacteria, virus, or
unknown when the file name does not say).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.data.images import check_image_header
from cxrsyn.data.sources import (
    FILE_COLUMN,
    BadFiles,
    DatasetFolder,
    PublishedCounts,
    SourceIndex,
    missing_root_error,
)

SPLITS = ("train", "val", "test")
CLASS_FOLDERS = {"NORMAL": 0, "PNEUMONIA": 1}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
IGNORED_DIRS = ("__MACOSX",)
DOWNLOAD_COMMAND = "python -m cxrsyn.data download kermany --root DIR"
PUBLISHED_COUNTS = {
    "train": {"n": 5216, "n_pos": 3875, "n_neg": 1341},
    "val": {"n": 16, "n_pos": 8, "n_neg": 8},
    "test": {"n": 624, "n_pos": 390, "n_neg": 234},
    "all": {"n": 5856, "n_pos": 4273, "n_neg": 1583},
}


@dataclass
class Kermany(DatasetFolder):
    """Kermany et al. pediatric chest X-rays (Cell 2018; Kaggle "Chest X-Ray Images (Pneumonia)"): all 5,856
    images (``selection: all``, the paper's) or chosen splits (``selection: [train, test]``)."""

    selection: str | Sequence[str] = "all"

    kind = "kermany"

    @property
    def name(self) -> str:
        return "kermany"

    def splits(self) -> list[str]:
        chosen = [self.selection] if isinstance(self.selection, str) else list(self.selection)
        if chosen == ["all"]:
            return list(SPLITS)
        unknown = [split for split in chosen if split not in SPLITS]
        if unknown or not chosen:
            raise CxrsynError(
                f"data.selection={self.selection!r} for Kermany; use all, or splits from {', '.join(SPLITS)}"
            )
        return chosen

    def missing_root(self) -> CxrsynError:
        return missing_root_error(self.root, "Kermany", DOWNLOAD_COMMAND, "CXRSYN_KERMANY_ROOT")

    def published_counts(self) -> PublishedCounts:
        splits = self.splits()
        expected = {split: dict(PUBLISHED_COUNTS[split]) for split in splits}
        if sorted(splits) == sorted(SPLITS):
            expected["all"] = dict(PUBLISHED_COUNTS["all"])
        else:
            expected["all"] = {
                key: sum(PUBLISHED_COUNTS[split][key] for split in splits) for key in ("n", "n_pos", "n_neg")
            }
        return PublishedCounts(expected, "Kermany (Kaggle release; Mendeley v2/v3 differ)")

    def index(self) -> SourceIndex:
        self.check()
        root = Path(self.root)
        splits = self.splits()
        trees, ignored = find_trees(root)
        if not trees:
            raise CxrsynError(
                f"no Kermany tree under {root}: expected {{train,val,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg somewhere "
                f"below it; unpack the download there (`{DOWNLOAD_COMMAND}`)"
            )
        chosen, duplicates = _one_tree(trees, root)
        bad = BadFiles(self.on_bad_file, "Kermany")
        rows = []
        for relative in sorted(trees[chosen]):
            split, folder, filename = relative.split("/")
            if split not in splits:
                continue
            file = chosen / relative
            try:
                check_image_header(file, self.max_image_pixels)
            except CxrsynError as error:
                bad(file.relative_to(root), str(error).split("; ")[0].removeprefix(f"image {file} "))
                continue
            rows.append(
                {
                    FILE_COLUMN: str(file),
                    PATH_COLUMN: str(file.relative_to(root)),
                    LABEL_COLUMN: CLASS_FOLDERS[folder],
                    PATIENT_COLUMN: patient_of(filename),
                    "split": split,
                    "subtype": subtype(filename, folder),
                }
            )
        columns = [FILE_COLUMN, PATH_COLUMN, LABEL_COLUMN, PATIENT_COLUMN, "split", "subtype"]
        table = pd.DataFrame(rows, columns=columns)
        found = {
            "tree": str(chosen.relative_to(root)) or ".",
            "duplicate_trees_ignored": [str(tree.relative_to(root)) for tree in duplicates],
            "images_in_tree": len(trees[chosen]),
            "ignored_files": ignored,
            "selection": splits,
            "splits_present": sorted({relative.split("/")[0] for relative in trees[chosen]}),
        }
        return SourceIndex(table, bad.skipped, found)


_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_MENDELEY_V3 = re.compile(r"^(?:NORMAL|BACTERIA|VIRUS)-(\d+)-\d+$", re.IGNORECASE)
_NUMBERED = re.compile(r"^(.+)-\d+$")


def patient_of(filename: str) -> str:
    """The patient an image belongs to, from its file name: ``person1_bacteria_1.jpeg`` -> ``person1``; else
    the name without its extension and last ``-NNNN`` (``IM-0115-0001.jpeg`` -> ``IM-0115``,
    ``NORMAL2-IM-0372-0001.jpeg`` -> ``NORMAL2-IM-0372``); Mendeley v3's ``VIRUS-1019345-0001.jpeg`` ->
    ``1019345`` (the number names the patient whatever the class prefix); a name matching none of these is
    its own patient."""
    stem = Path(filename).stem
    match = _PERSON.match(stem) or _MENDELEY_V3.match(stem) or _NUMBERED.match(stem)
    return match.group(1) if match else stem


def subtype(filename: str, folder: str) -> str:
    if folder == "NORMAL":
        return "normal"
    lowered = filename.lower()
    for name in ("bacteria", "virus"):
        if name in lowered:
            return name
    return "unknown"


def find_trees(root: Path) -> tuple[dict[Path, set[str]], dict[str, int]]:
    """Every folder holding ``<split>/<CLASS>/`` images, with its images as ``split/CLASS/name``, and counts
    of what was ignored on the way."""
    trees: dict[Path, set[str]] = {}
    ignored = {"macosx_entries": 0, "resource_forks": 0, "ds_store": 0, "not_images": 0}
    for folder, dirnames, filenames in os.walk(root):
        for name in [d for d in dirnames if d in IGNORED_DIRS]:
            ignored["macosx_entries"] += sum(len(files) for _, _, files in os.walk(Path(folder) / name))
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        here = Path(folder)
        if here.name not in CLASS_FOLDERS or here.parent.name.lower() not in SPLITS:
            continue
        tree = here.parent.parent
        for filename in filenames:
            if filename.startswith("._"):
                ignored["resource_forks"] += 1
            elif filename == ".DS_Store":
                ignored["ds_store"] += 1
            elif not filename.lower().endswith(IMAGE_SUFFIXES):
                ignored["not_images"] += 1
            else:
                trees.setdefault(tree, set()).add(f"{here.parent.name.lower()}/{here.name}/{filename}")
    return trees, ignored


def _one_tree(trees: dict[Path, set[str]], root: Path) -> tuple[Path, list[Path]]:
    """The tree to read: the shallowest of the largest; every other tree must be a copy of part of it."""
    chosen = sorted(trees, key=lambda tree: (-len(trees[tree]), len(tree.parts), str(tree)))[0]
    others = [tree for tree in trees if tree != chosen]
    different = [tree for tree in others if not trees[tree] <= trees[chosen]]
    if different:
        listing = ", ".join(
            f"{tree.relative_to(root) or '.'} ({len(trees[tree])} images)" for tree in [chosen, *different]
        )
        raise CxrsynError(
            f"{root} holds several Kermany trees with different images: {listing}; point data.root at the one to use"
        )
    return chosen, sorted(others)
