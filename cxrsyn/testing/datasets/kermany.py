"""The Kermany "Chest X-Ray Images (Pneumonia)" trees: Kaggle's (with its duplicate nested tree,
``__MACOSX/`` resource forks, ``.DS_Store`` and RGB JPEGs among grayscale ones) and Mendeley v2 and v3."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from cxrsyn.testing.datasets.common import chest_pixels

KERMANY_LAYOUTS = ("kaggle", "mendeley_v2", "mendeley_v3")


def write_kermany_root(
    root: str | os.PathLike,
    counts: dict[str, tuple[int, int]],
    layout: str = "kaggle",
    image_size: int = 48,
    quirks: bool = True,
    seed: int = 0,
    images_per_patient: int = 1,
) -> Path:
    """A Kermany tree. ``counts``: split -> (normal, pneumonia) images. Kaggle names pneumonia files
    ``person<N>_bacteria_<M>.jpeg`` / ``person<N>_virus_<M>.jpeg`` and normals ``IM-<N>-<M>.jpeg`` /
    ``NORMAL2-IM-<N>-<M>.jpeg``; Mendeley v3 ``BACTERIA-<id>-<M>.jpeg``. ``images_per_patient``: consecutive
    images of a class share a patient (N) and differ only in film grain: near copies.
    With ``quirks``: Kaggle's duplicate ``chest_xray/chest_xray`` tree, ``__MACOSX/._*`` forks, ``.DS_Store``,
    every third image saved as RGB."""
    if layout not in KERMANY_LAYOUTS:
        raise ValueError(f"layout must be one of {KERMANY_LAYOUTS}")
    root = Path(root)
    base = root / ("CellData/chest_xray" if layout == "mendeley_v3" else "chest_xray")
    number = 0
    written: list[Path] = []
    for split, (n_normal, n_pneumonia) in counts.items():
        for label, count in ((0, n_normal), (1, n_pneumonia)):
            folder = base / split / ("PNEUMONIA" if label else "NORMAL")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                number += 1
                patient, image_number = divmod(i, images_per_patient)
                patient_number = number - image_number  # the number of the patient's first image
                name = _kermany_name(layout, label, patient, patient_number, image_number + 1)
                pixels = chest_pixels(
                    image_size,
                    label,
                    seed + patient_number,
                    render_size=max(32, image_size),
                    grain_seed=seed + number,
                )
                image = Image.fromarray(pixels)
                if quirks and number % 3 == 0:
                    image = image.convert("RGB")
                image.save(folder / name, format="JPEG", quality=90)
                written.append(folder / name)
    if quirks:
        for path in written:
            relative = path.relative_to(root)
            fork = root / "__MACOSX" / relative.parent / f"._{path.name}"
            fork.parent.mkdir(parents=True, exist_ok=True)
            fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
        (base / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (written[0].parent / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        if layout == "kaggle":
            for path in written:
                copy = base / "chest_xray" / path.relative_to(base)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(path.read_bytes())
    return root


def _kermany_name(layout: str, label: int, patient: int, number: int, image: int) -> str:
    kind = "bacteria" if patient % 3 else "virus"
    if layout == "mendeley_v3":
        return f"{kind.upper() if label else 'NORMAL'}-{1000 + number}-{image:04d}.jpeg"
    if label:
        return f"person{number}_{kind}_{image}.jpeg"
    return f"IM-{number:04d}-{image:04d}.jpeg" if patient % 2 else f"NORMAL2-IM-{number:04d}-{image:04d}.jpeg"
