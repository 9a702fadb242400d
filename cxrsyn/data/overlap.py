"""The train/test overlap guard: no test image may also be a training or validation image, and no test
patient of a real dataset may also have given a training image of that dataset (patient-disjoint splits).

Two images are the same when they are the same file (after resolving links) or have the same bytes (sha256).
Only files whose sizes occur on both sides are hashed: equal bytes need equal sizes, so the guard reads
almost nothing when the sets differ, as they should. Patients are compared within one dataset kind (RSNA
patientId, Kermany's person, NIH's patient id...); generated and phantom sets have no real patients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import sha256_of_file
from cxrsyn.core.manifest import PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.data.sources import FILE_COLUMN

KIND_COLUMN = "dataset"  # the source kind of each row (set by the DataModule)
SYNTHETIC_KINDS = ("folder", "phantom")  # their patient ids are prompts or paths, not people

_HASHES: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Overlap:
    test_set: str
    n: int  # test images that are also training or validation images
    example_test: str
    example_train: str
    how: str  # "same file", "same bytes" or "from the same patient"


def find_overlaps(train: pd.DataFrame, test_sets: Mapping[str, pd.DataFrame]) -> list[Overlap]:
    """For each test set sharing images with ``train`` (training and validation rows), how many and one
    example."""
    train_files = _files(train)
    by_real = {real: path for real, path in zip(train_files["real"], train[PATH_COLUMN], strict=True)}
    train_sizes = set(train_files["size"])
    overlaps = []
    for name, table in test_sets.items():
        files = _files(table)
        same_file = [real in by_real for real in files["real"]]
        found = [
            (path, by_real[real], "same file")
            for real, path, hit in zip(files["real"], table[PATH_COLUMN], same_file, strict=True)
            if hit
        ]
        candidates = [i for i, size in enumerate(files["size"]) if size in train_sizes and not same_file[i]]
        if candidates:
            train_hashes = {}
            test_sizes = {files["size"][i] for i in candidates}
            for real, size, path in zip(
                train_files["real"], train_files["size"], train[PATH_COLUMN], strict=True
            ):
                if size in test_sizes:
                    train_hashes.setdefault(_sha256(real, size), path)
            for i in candidates:
                match = train_hashes.get(_sha256(files["real"][i], files["size"][i]))
                if match is not None:
                    found.append((table[PATH_COLUMN].iloc[i], match, "same bytes"))
        if not found:
            found = _shared_patients(train, table)
        if found:
            test_path, train_path, how = found[0]
            overlaps.append(Overlap(name, len(found), str(test_path), str(train_path), how))
    return overlaps


def _shared_patients(train: pd.DataFrame, test: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Test images whose patient also gave a training/validation image of the same real dataset (a patient's
    other film is not a new patient). Generated and phantom sets name no real patients: not compared."""
    if KIND_COLUMN not in train.columns or KIND_COLUMN not in test.columns:
        return []
    train = train[~train[KIND_COLUMN].isin(SYNTHETIC_KINDS)]
    seen = {
        (kind, patient): path
        for kind, patient, path in zip(
            train[KIND_COLUMN], train[PATIENT_COLUMN].astype(str), train[PATH_COLUMN], strict=True
        )
    }
    return [
        (path, seen[(kind, patient)], "from the same patient")
        for kind, patient, path in zip(
            test[KIND_COLUMN], test[PATIENT_COLUMN].astype(str), test[PATH_COLUMN], strict=True
        )
        if (kind, patient) in seen
    ]


def check_overlap(
    train: pd.DataFrame, test_sets: Mapping[str, pd.DataFrame], allow: bool = False
) -> list[Overlap]:
    """Stop with one line when a test image is also a training or validation image, unless ``allow``; returns
    what was found (for the summary) either way."""
    overlaps = find_overlaps(train, test_sets)
    if overlaps and not allow:
        first = overlaps[0]
        others = "".join(f"; {o.n} in {o.test_set}" for o in overlaps[1:])
        raise CxrsynError(
            f"{first.n} image(s) of test set {first.test_set} are also training/validation images or share their "
            f"patient{others} "
            f"(e.g. test image {first.example_test} is {first.how} as training image {first.example_train}); train on "
            "data disjoint from every test set (another split, another dataset), or set "
            "evaluation.allow_overlap=true to proceed knowingly"
        )
    return overlaps


def _files(table: pd.DataFrame) -> dict[str, list]:
    real = [os.path.realpath(file) for file in table[FILE_COLUMN]]
    return {"real": real, "size": [os.stat(file).st_size for file in real]}


def _sha256(real: str, size: int) -> str:
    key = (real, size, os.stat(real).st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_of_file(real)
    return _HASHES[key]
