"""Post-processing that derives one dataset folder from another, with provenance in its manifest.

``crop_bottom_fraction`` cuts away the bottom rows (the paper's 0.3 removes Nano Banana's watermark and
the region below the chest), with the same arithmetic as the on-the-fly ``CropBottom`` transform, so a
cropped folder and ``crop_bottom_fraction`` on the raw folder give the same pixels. Each output row keeps
the source's columns and adds ``source_dir``, ``source_path``, ``source_sha256`` and ``operation``.
Idempotent: an image whose source and operation are unchanged is not rewritten.

Output images keep the input's relative layout under ``images/`` (``images/x.jpg`` -> ``images/x.png``,
``a/x.png`` -> ``images/a/x.png``), so two inputs never share an output; two inputs that would still meet
(``images/x.jpg`` and ``images/x.png``) are refused, naming both lines. The output folder is locked while it
is written (``cxrsyn.core.runfolder``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import atomic_write, sha256_of_file
from cxrsyn.core.manifest import IMAGES_DIRNAME, PATH_COLUMN, manifest_path, read_manifest, write_manifest
from cxrsyn.core.paths import inside, normalize_relative
from cxrsyn.core.runfolder import exclusive
from cxrsyn.data.transforms import crop_bottom

PROVENANCE_COLUMNS = ("source_dir", "source_path", "source_sha256", "operation")


def crop_folder(
    in_dir: str | os.PathLike, out_dir: str | os.PathLike, crop_bottom_fraction: float
) -> dict[str, Any]:
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.resolve() == out_dir.resolve():
        raise CxrsynError(f"out_dir {out_dir} is in_dir: write the derived folder somewhere else")
    crop_bottom(np.zeros((2, 2)), crop_bottom_fraction)  # validates the fraction
    with exclusive(out_dir, "cxrsyn.postprocess"):
        return _crop_folder(in_dir, out_dir, crop_bottom_fraction)


def output_path(listed: str) -> str:
    """Where the image listed as ``listed`` (normalised, inside its folder) goes in the derived folder: the
    same relative path under ``images/``, as PNG."""
    path = PurePosixPath(listed)
    if len(path.parts) > 1 and path.parts[0] == IMAGES_DIRNAME:
        path = PurePosixPath(*path.parts[1:])
    return str(PurePosixPath(IMAGES_DIRNAME) / path.with_name(f"{path.stem}.png"))


def _crop_folder(in_dir: Path, out_dir: Path, crop_bottom_fraction: float) -> dict[str, Any]:
    table = read_manifest(in_dir)
    targets: dict[str, int] = {}
    for row, listed in enumerate(table[PATH_COLUMN]):
        target = output_path(listed)
        if target in targets:
            first = targets[target]
            raise CxrsynError(
                f"{manifest_path(in_dir)} lines {first + 2} and {row + 2} ({table[PATH_COLUMN].iloc[first]} "
                f"and {listed}) would both be written to {target}; rename one of the images"
            )
        targets[target] = row
    operation = f"crop_bottom(fraction={crop_bottom_fraction})"
    previous = {}
    if manifest_path(out_dir).is_file():
        for row in read_manifest(out_dir).to_dict("records"):
            previous[normalize_relative(str(row.get("source_path")))] = row
    (out_dir / IMAGES_DIRNAME).mkdir(parents=True, exist_ok=True)
    rows, written = [], 0
    for row in tqdm(table.to_dict("records"), desc=f"crop -> {out_dir}", unit="img"):
        source = in_dir / row[PATH_COLUMN]
        if not source.is_file():
            raise CxrsynError(
                f"{source} is listed in {manifest_path(in_dir)} but missing; restore it or remove its row"
            )
        source_sha = sha256_of_file(source)
        target = inside(out_dir, output_path(row[PATH_COLUMN]))
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
                PATH_COLUMN: output_path(row[PATH_COLUMN]),
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
