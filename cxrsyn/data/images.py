"""Reading dataset-folder images as float32 grayscale arrays in [0, 1], bright = dense (MONOCHROME2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrsyn.data.dicom import is_dicom, read_dicom
from cxrsyn.errors import CxrsynError

_FIX = "replace the file or remove its row from the manifest"


def check_image_header(path: str | os.PathLike) -> None:
    """Cheap check (header only, no decode) that ``path`` exists and is an image Pillow can open."""
    path = Path(path)
    if not path.is_file():
        raise CxrsynError(f"image {path} is listed in the manifest but missing; {_FIX}")
    if path.stat().st_size == 0:
        raise CxrsynError(f"image {path} is empty (0 bytes); {_FIX}")
    if is_dicom(path):
        return  # DICOM files are checked when they are decoded
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - touching the header is the check
    except (UnidentifiedImageError, OSError) as error:
        raise CxrsynError(f"image {path} is not a readable image ({type(error).__name__}); {_FIX}") from None


def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ... or DICOM) to a float32 HxW array in [0, 1], bone bright.

    Colour images are converted with ITU-R 601 luma (Pillow's ``L``); 16-bit images keep their precision.
    """
    if is_dicom(path):
        return read_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _to_unit_float(image)
    except FileNotFoundError:
        raise CxrsynError(f"image {path} is listed in the manifest but missing; {_FIX}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CxrsynError(f"image {path} could not be decoded ({error}); {_FIX}") from None


def _to_unit_float(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return np.clip(array / peak, 0.0, 1.0)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        return (array - low) / (high - low) if high > low else np.zeros_like(array)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0
