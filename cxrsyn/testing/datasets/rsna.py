"""The RSNA Pneumonia Detection Challenge layout: unsorted label rows (one per box), the detailed class file,
one DICOM per patient written by pydicom (JPEG baseline like the real ones, or uncompressed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrsyn.testing.datasets.common import chest_pixels, write_csv, write_dicom

# RSNA's names, written out as Kaggle ships them (not imported from the reader the fixtures test)
RSNA_LABELS_CSV = "stage_2_train_labels.csv"
RSNA_CLASSES_CSV = "stage_2_detailed_class_info.csv"
RSNA_IMAGES = "stage_2_train_images"
RSNA_NORMAL, RSNA_OPACITY, RSNA_NOT_NORMAL = "Normal", "Lung Opacity", "No Lung Opacity / Not Normal"


@dataclass(frozen=True)
class RsnaPatient:
    patient_id: str
    detailed_class: str  # Normal | Lung Opacity | No Lung Opacity / Not Normal
    n_boxes: int = 0  # rows with Target 1 (Lung Opacity only)
    age: str = "51"  # as RSNA stores it: a plain number
    sex: str = "M"
    view: str = "PA"


def write_rsna_root(
    root: str | os.PathLike,
    patients: Sequence[RsnaPatient],
    image_size: int = 64,
    with_classes: bool = True,
    seed: int = 0,
    syntax: str = "jpeg_baseline",
) -> Path:
    """An RSNA-layout folder: unsorted label rows (one per box), the detailed class file, one DICOM per patient."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    label_rows, class_rows = [], []
    for patient in patients:
        positive = patient.detailed_class == RSNA_OPACITY
        boxes = max(1, patient.n_boxes) if positive else 1
        for _ in range(boxes):
            if positive:
                x, y = rng.integers(100, 600, 2)
                w, h = rng.integers(100, 300, 2)
                label_rows.append([patient.patient_id, x, y, w, h, 1])
            else:
                label_rows.append([patient.patient_id, "", "", "", "", 0])
            class_rows.append([patient.patient_id, patient.detailed_class])
    order = rng.permutation(len(label_rows))  # the real files are not sorted
    write_csv(
        root / RSNA_LABELS_CSV,
        ["patientId", "x", "y", "width", "height", "Target"],
        [label_rows[i] for i in order],
    )
    if with_classes:
        write_csv(root / RSNA_CLASSES_CSV, ["patientId", "class"], [class_rows[i] for i in order])
    for number, patient in enumerate(patients):
        pixels = chest_pixels(image_size, int(patient.detailed_class == RSNA_OPACITY), seed + number)
        write_dicom(
            root / RSNA_IMAGES / f"{patient.patient_id}.dcm",
            pixels,
            patient_id=patient.patient_id,
            age=patient.age,
            sex=patient.sex,
            view=patient.view,
            syntax=syntax,
        )
    return root


def rsna_patients(n_normal: int, n_opacity: int, n_not_normal: int, seed: int = 0) -> list[RsnaPatient]:
    """Patients with ids like RSNA's, mixed views and sexes, some with several boxes."""
    rng = np.random.default_rng(seed)
    patients = []
    for klass, count in (
        (RSNA_NORMAL, n_normal),
        (RSNA_OPACITY, n_opacity),
        (RSNA_NOT_NORMAL, n_not_normal),
    ):
        for _ in range(count):
            patients.append(
                RsnaPatient(
                    patient_id=str(_uuid(rng)),
                    detailed_class=klass,
                    n_boxes=int(rng.integers(1, 4)) if klass == RSNA_OPACITY else 0,
                    age=str(int(rng.integers(2, 90))),
                    sex=str(rng.choice(["M", "F"])),
                    view=str(rng.choice(["PA", "AP"])),
                )
            )
    return patients


def _uuid(rng: np.random.Generator) -> str:
    digits = "".join(f"{value:02x}" for value in rng.integers(0, 256, 16))
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
