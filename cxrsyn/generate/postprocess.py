"""Post-processing that derives one dataset folder from another, with provenance in its manifest.

``crop_bottom_fraction`` cuts away the bottom rows (the paper's 0.3 removes Nano Banana's watermark and
the region below the chest), with the same arithmetic as the on-the-fly ``CropBottom`` transform, so a
cropped folder and ``crop_bottom_fraction`` on the raw folder give the same pixels. Each output row keeps
the source's columns and adds ``source_dir``, ``source_path``, ``source_sha256`` and ``operation``.
Idempotent: an image whose source and operation are unchanged is not rewritten.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import atomic_write, sha256_of_file
from cxrsyn.core.manifest import IMAGES_DIRNAME, PATH_COLUMN, manifest_path, read_manifest, write_manifest
from cxrsyn.data.transforms import crop_bottom

PROVENANCE_COLUMNS = ("source_dir", "source_path", "source_sha256", "operation")


def crop_folder(
    in_dir: str | os.PathLike, out_dir: str | os.PathLike, crop_bottom_fraction: float
) -> dict[str, Any]:
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.resolve() == out_dir.resolve():
        raise CxrsynError(f"out_dir {out_dir} is in_dir: write the derived folder somewhere else")
    crop_bottom(np.zeros((2, 2)), crop_bottom_fraction)  # validates the fraction
    table = read_manifest(in_dir)
    operation = f"crop_bottom(fraction={crop_bottom_fraction})"
    previous = {}
    if manifest_path(out_dir).is_file():
        for row in read_manifest(out_dir).to_dict("records"):
            previous[row.get("source_path")] = row
    (out_dir / IMAGES_DIRNAME).mkdir(parents=True, exist_ok=True)
    rows, written = [], 0
    for row in tqdm(table.to_dict("records"), desc=f"crop -> {out_dir}", unit="img"):
        source = in_dir / row[PATH_COLUMN]
        if not source.is_file():
            raise CxrsynError(
                f"{source} is listed in {manifest_path(in_dir)} but missing; restore it or remove its row"
            )
        source_sha = sha256_of_file(source)
        target = out_dir / IMAGES_DIRNAME / f"{Path(row[PATH_COLUMN]).stem}.png"
        old = previous.get(row[PATH_COLUMN])
        reusable = (
            old is not None
            and old.get("source_sha256") == source_sha
            and old.get("operation") == operation
            and target.is_file()
            and sha256_of_file(target) == old.get("sha256")
        )
        if not reusable:
            _write_png(target, _crop(source, crop_bottom_fraction))
            written += 1
        rows.append(
            {
                **{k: v for k, v in row.items() if k not in PROVENANCE_COLUMNS},
                PATH_COLUMN: f"{IMAGES_DIRNAME}/{target.name}",
                "sha256": sha256_of_file(target),
                "source_dir": str(in_dir.resolve()),
                "source_path": row[PATH_COLUMN],
                "source_sha256": source_sha,
                "operation": operation,
            }
        )
    write_manifest(out_dir, rows)
    print(
        f"postprocess: {operation} on {len(rows)} images from {in_dir} -> {out_dir} ({written} written, "
        f"{len(rows) - written} unchanged)"
    )
    return {"images": len(rows), "written": written, "operation": operation}


def _crop(path: Path, fraction: float) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return Image.fromarray(crop_bottom(np.asarray(image), fraction))
    except (OSError, ValueError) as error:
        raise CxrsynError(
            f"{path} could not be decoded ({error}); replace the file or remove its row"
        ) from None


def _write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
