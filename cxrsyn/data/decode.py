"""Decode an image file straight to the model's input size, once: what the decode-once cache stores.

JPEG data (JPEG files, and JPEG-baseline DICOMs such as RSNA's) are decoded by Pillow in draft mode: libjpeg
scales by 1/2, 1/4 or 1/8 inside the inverse DCT, never below the size the output needs, and an area
resize finishes the job. That is several times faster than a full decode and differs from it by a few grey
levels (``fast_jpeg=False`` turns it off). Everything else goes through ``read_grayscale``.
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import asdict, dataclass

import albumentations as A
import numpy as np
from PIL import UnidentifiedImageError

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.dicom import (
    DicomDecodeError,
    is_dicom,
    is_monochrome1,
    jpeg_baseline_frame,
    read_dataset,
    stored_pixels,
    to_display,
)
from cxrsyn.data.images import PIL_ERRORS, DeepWindow, opened, read_grayscale
from cxrsyn.data.transforms import crop_bottom, resize_ops, rows_kept

# Bump when decoding changes what lands in a cache: every cache built before is rebuilt.
DECODER_VERSION = 2  # 2: the crop removes ceil(f x H) rows of the stored image, before any reduction


@dataclass(frozen=True)
class Preprocessing:
    """What turns a file into a cached image: deep (16-bit) pixels mapped to [0, 1] by ``window``, then crop,
    then resize to ``image_size`` with the ``resize`` policy."""

    image_size: int = 224
    resize: str = "stretch"
    crop_bottom_fraction: float = 0.0
    fast_jpeg: bool = True
    window: DeepWindow = DeepWindow()

    def as_dict(self) -> dict[str, object]:
        values = {**asdict(self), "decoder_version": DECODER_VERSION}
        if self.window == DeepWindow():  # left out at its default: caches built before it existed stay valid
            del values["window"]
        return values


def decode_resized(path: str | os.PathLike, prep: Preprocessing) -> np.ndarray:
    """The file as a uint8 ``image_size`` x ``image_size`` array, bone bright. Raises ``CxrsynError``."""
    return decode_with_size(path, prep)[0]


def decode_with_size(path: str | os.PathLike, prep: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """``decode_resized`` and the stored image's (height, width) before the crop."""
    image, size = _decode_cropped(path, prep)
    resized = _geometry(prep)(image=image)["image"]
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8), size


def _decode_cropped(path: str | os.PathLike, prep: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """Float32 [0, 1] image with the bottom crop applied in the stored image's rows (``rows_kept`` of its
    full height), possibly reduced by the JPEG decoder (never below the output size); and the stored size."""
    if os.path.getsize(path) == 0:
        raise CxrsynError(f"{path}: empty file (0 bytes); replace or re-download the file")
    if is_dicom(path):
        dataset = read_dataset(path)
        jpeg = jpeg_baseline_frame(dataset) if prep.fast_jpeg else None
        if jpeg is not None:
            try:
                reduced = _pillow_draft(io.BytesIO(jpeg), prep)
            except (*PIL_ERRORS, CxrsynError):  # pydicom's decoder judges it
                reduced = None
            if reduced is not None:
                image, size = reduced
                return ((1.0 - image) if is_monochrome1(dataset) else image), size
        return _cropped(to_display(dataset, stored_pixels(dataset, path), path), prep)
    if not prep.fast_jpeg:
        return _cropped(read_grayscale(path, prep.window), prep)
    try:
        with opened(path) as probe:
            is_jpeg = probe.format == "JPEG"
    except (UnidentifiedImageError, OSError) as error:
        raise CxrsynError(
            f"{path}: not a readable image ({type(error).__name__}); replace or re-download the file"
        ) from None
    if not is_jpeg:
        return _cropped(read_grayscale(path, prep.window), prep)
    try:
        reduced = _pillow_draft(path, prep)
    except PIL_ERRORS as error:
        raise DicomDecodeError(
            f"{path}: JPEG data could not be decoded ({error}); replace or re-download the file"
        ) from None
    return reduced if reduced is not None else _cropped(read_grayscale(path), prep)


def _cropped(image: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    return crop_bottom(image, prep.crop_bottom_fraction), (image.shape[0], image.shape[1])


def _pillow_draft(
    source: str | os.PathLike | io.BytesIO, prep: Preprocessing
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Decode JPEG data at the reduced scale ``draft_scale`` picks and crop it (with the stored size); None
    when Pillow's decoder did not reduce as asked (the caller then decodes in full)."""
    with opened(source) as image:
        width, height = image.size
        scale = draft_scale(width, height, prep)
        wanted = (math.ceil(width / scale), math.ceil(height / scale))
        image.draft("L", wanted)
        if image.size != wanted:
            return None
        image = image.convert("L") if image.mode != "L" else image
        image.load()
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[: rows_kept(height, prep.crop_bottom_fraction) // scale], (height, width)


def draft_scale(width: int, height: int, prep: Preprocessing) -> int:
    """The largest JPEG DCT scale (8, 4, 2 or 1) at which the cropped image still only shrinks to the
    output size and, when cropping, whose reduced rows end exactly where the crop ends in the stored image
    (the kept rows are a multiple of the scale)."""
    kept = rows_kept(height, prep.crop_bottom_fraction)
    size = prep.image_size
    for scale in (8, 4, 2):
        if prep.crop_bottom_fraction > 0 and kept % scale:
            continue
        short, long = sorted((width / scale, kept / scale))
        needed = {"stretch": short, "letterbox": long, "center_crop": short}.get(prep.resize, long)
        if needed >= size:
            return scale
    return 1


@functools.lru_cache(maxsize=8)
def _geometry(prep: Preprocessing) -> A.Compose:
    return A.Compose(resize_ops(prep.image_size, prep.resize))
