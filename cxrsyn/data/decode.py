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
from PIL import Image, UnidentifiedImageError

from cxrsyn.data.dicom import (
    DicomDecodeError,
    is_dicom,
    is_monochrome1,
    jpeg_baseline_frame,
    read_dataset,
    stored_pixels,
    to_display,
)
from cxrsyn.data.images import DeepWindow, read_grayscale
from cxrsyn.data.transforms import CropBottom, resize_ops
from cxrsyn.errors import CxrsynError

# Bump when decoding changes what lands in a cache: every cache built before is rebuilt.
DECODER_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """What turns a file into a cached image: deep (16-bit) pixels mapped to [0, 1] by ``window``, then crop,
    then resize to ``image_size`` with the ``resize`` policy."""

    image_size: int = 224
    resize: str = "letterbox"
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
    image = _decode_reduced(path, prep)
    resized = _geometry(prep)(image=image)["image"]
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


def _decode_reduced(path: str | os.PathLike, prep: Preprocessing) -> np.ndarray:
    """Float32 [0, 1] image, possibly already reduced by the JPEG decoder (never below the output size)."""
    if os.path.getsize(path) == 0:
        raise CxrsynError(f"{path}: empty file (0 bytes); replace or re-download the file")
    if is_dicom(path):
        dataset = read_dataset(path)
        jpeg = jpeg_baseline_frame(dataset) if prep.fast_jpeg else None
        if jpeg is None:
            return to_display(dataset, stored_pixels(dataset, path), path)
        try:
            image = _pillow_draft(io.BytesIO(jpeg), prep) / 255.0
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # let pydicom's decoder judge it
            return to_display(dataset, stored_pixels(dataset, path), path)
        return (1.0 - image) if is_monochrome1(dataset) else image
    if not prep.fast_jpeg:
        return read_grayscale(path, prep.window)
    try:
        with Image.open(path) as probe:
            is_jpeg = probe.format == "JPEG"
    except (UnidentifiedImageError, OSError) as error:
        raise CxrsynError(
            f"{path}: not a readable image ({type(error).__name__}); replace or re-download the file"
        ) from None
    if not is_jpeg:
        return read_grayscale(path, prep.window)
    try:
        return _pillow_draft(path, prep) / 255.0
    except (OSError, SyntaxError, ValueError) as error:
        raise DicomDecodeError(
            f"{path}: JPEG data could not be decoded ({error}); replace or re-download the file"
        ) from None


def _pillow_draft(source: str | os.PathLike | io.BytesIO, prep: Preprocessing) -> np.ndarray:
    with Image.open(source) as image:
        width, height = image.size
        image.draft("L", draft_size(width, height, prep))
        image = image.convert("L") if image.mode != "L" else image
        image.load()
        return np.asarray(image, dtype=np.float32)


def draft_size(width: int, height: int, prep: Preprocessing) -> tuple[int, int]:
    """The smallest full-image size from which the crop and resize still only shrink."""
    kept_height = max(1.0, height * (1.0 - prep.crop_bottom_fraction))
    size = prep.image_size
    if prep.resize == "stretch":
        scale_x, scale_y = size / width, size / kept_height
    else:
        longest = max(width, kept_height) if prep.resize == "letterbox" else min(width, kept_height)
        scale_x = scale_y = size / longest
    return max(1, math.ceil(width * scale_x)), max(1, math.ceil(height * scale_y))


@functools.lru_cache(maxsize=8)
def _geometry(prep: Preprocessing) -> A.Compose:
    ops: list[A.BasicTransform] = []
    if prep.crop_bottom_fraction > 0:
        ops.append(CropBottom(prep.crop_bottom_fraction))
    return A.Compose([*ops, *resize_ops(prep.image_size, prep.resize)])
