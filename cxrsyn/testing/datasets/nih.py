"""The NIH ChestX-ray14 layout: the label table, the PNG folders (Kaggle's or the NIH box's), the official
split lists and Google's expert labels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cxrsyn.testing.datasets.common import chest_pixels, write_csv

# Names and columns below are written literally, as the owners ship them (not taken from the readers).
NIH_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


@dataclass(frozen=True)
class NihImage:
    patient_id: int
    follow_up: int
    findings: str  # Finding Labels: "No Finding" or labels joined by "|"
    age: str = "58"
    sex: str = "M"
    view: str = "PA"
    split: str = "train_val"  # which official list names it: train_val | test
    airspace_opacity: str = ""  # YES | NO: in Google's expert labels; empty: not there
    expert_set: str = "test"  # test | validation

    @property
    def image_index(self) -> str:
        return f"{self.patient_id:08d}_{self.follow_up:03d}.png"


def write_nih_root(
    root: str | os.PathLike,
    images: Sequence[NihImage],
    layout: str = "kaggle",
    label_file: str = "Data_Entry_2017_v2020.csv",
    sex_column: str = "Patient Gender",
    split_lists: bool = True,
    expert_files: str = "google_cloud",
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """An NIH tree: the label table, 8-bit PNGs (every fourth saved as RGBA, as some real ones are) in
    ``images_001/images/`` ... (``kaggle``) or ``images/`` (``nih_box``), the official split lists and
    Google's expert labels (``google_cloud``: four_findings_expert_labels/{test,validation}_labels.csv;
    ``torchxrayvision``: its combined google2019_nih-chest-xray-labels.csv.gz; ``none``)."""
    root = Path(root)
    columns = [sex_column if c == "Patient Gender" else c for c in NIH_COLUMNS]
    rows = [
        [
            im.image_index,
            im.findings,
            im.follow_up,
            im.patient_id,
            im.age,
            im.sex,
            im.view,
            2500,
            2048,
            0.168,
            0.168,
        ]
        for im in images
    ]
    write_csv(root / label_file, columns, rows)
    for number, image in enumerate(images):
        folder = (
            root / f"images_{1 + number * 12 // max(1, len(images)):03d}" / "images"
            if layout == "kaggle"
            else root / "images"
        )
        folder.mkdir(parents=True, exist_ok=True)
        label = int("Pneumonia" in image.findings.split("|"))
        picture = Image.fromarray(
            chest_pixels(image_size, label, seed + number, render_size=max(32, image_size))
        )
        (picture.convert("RGBA") if number % 4 == 3 else picture).save(folder / image.image_index)
    if split_lists:
        for split, name in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
            names = [im.image_index for im in images if im.split == split]
            (root / name).write_text("".join(f"{n}\n" for n in names))
    expert = [im for im in images if im.airspace_opacity]
    expert_columns = [*columns, "Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass"]
    if expert_files == "google_cloud":
        for expert_set, name in (("test", "test_labels.csv"), ("validation", "validation_labels.csv")):
            chosen = [im for im in expert if im.expert_set == expert_set]
            write_csv(
                root / "four_findings_expert_labels" / name,
                expert_columns,
                [[*rows[images.index(im)], "NO", "NO", im.airspace_opacity, "NO"] for im in chosen],
            )
    elif expert_files == "torchxrayvision":
        table = [
            [
                *rows[images.index(im)],
                "NO",
                "NO",
                im.airspace_opacity,
                "NO",
                "val" if im.expert_set == "validation" else "test",
            ]
            for im in expert
        ]
        write_csv(root / "google2019_nih-chest-xray-labels.csv.gz", [*expert_columns, "Set Id"], table)
    return root
