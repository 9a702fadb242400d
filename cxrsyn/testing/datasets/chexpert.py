"""The CheXpert layout as unzipped: ``<folder>/{train,valid}.csv`` and one JPEG per row."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cxrsyn.testing.datasets.common import chest_pixels, write_csv

# The table's columns written literally, as Stanford ships them (not taken from the reader).
CHEXPERT_FINDINGS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


@dataclass(frozen=True)
class CheXpertImage:
    patient: int
    study: int = 1
    view_number: int = 1
    frontal: bool = True
    ap_pa: str = "AP"  # AP | PA | LL | RL for frontal images; blank for lateral ones
    sex: str = "Female"  # Female | Male | Unknown
    age: int = 60
    pneumonia: float | None = None  # 1, 0, -1 or blank
    no_finding: float | None = None  # 1 or blank
    split: str = "train"  # train | valid

    @property
    def path(self) -> str:
        kind = "frontal" if self.frontal else "lateral"
        return f"{self.split}/patient{self.patient:05d}/study{self.study}/view{self.view_number}_{kind}.jpg"


def write_chexpert_root(
    root: str | os.PathLike,
    images: Sequence[CheXpertImage],
    folder: str = "CheXpert-v1.0-small",
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """CheXpert as unzipped: ``root/<folder>/{train,valid}.csv`` whose Path column starts with ``<folder>/``,
    and one 8-bit JPEG per row under ``root/<folder>/{train,valid}/patientNNNNN/studyN/``."""
    root = Path(root)
    base = root / folder
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
    for split in ("train", "valid"):
        chosen = [im for im in images if im.split == split]
        if not chosen:
            continue
        rows = []
        for im in chosen:
            findings = {name: "" for name in CHEXPERT_FINDINGS}
            findings["Pneumonia"] = "" if im.pneumonia is None else f"{float(im.pneumonia):.1f}"
            findings["No Finding"] = "" if im.no_finding is None else f"{float(im.no_finding):.1f}"
            if im.pneumonia == 1:
                findings["Lung Opacity"] = "1.0"
            view = "Frontal" if im.frontal else "Lateral"
            rows.append(
                [
                    f"{folder}/{im.path}",
                    im.sex,
                    im.age,
                    view,
                    im.ap_pa if im.frontal else "",
                    *findings.values(),
                ]
            )
        write_csv(base / f"{split}.csv", header, rows)
    for number, im in enumerate(images):
        path = base / im.path
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = chest_pixels(
            image_size, int(im.pneumonia == 1), seed + number, render_size=max(32, image_size)
        )
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return root
