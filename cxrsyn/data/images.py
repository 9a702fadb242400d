"""Reading dataset-folder images as float32 grayscale arrays in [0, 1], bright = dense (MONOCHROME2)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.dicom import DEFAULT_MAX_IMAGE_PIXELS, is_dicom, read_dicom

_FIX = "replace the file or remove its row from the manifest"
DEEP_WINDOWS = ("full_range", "min_max", "percentile")
# A 16-bit image whose largest value is below this uses less than 1/16 of the range: 12 bits or fewer
DEEP_RANGE_WARNING_MAX = 65536 // 16
# What Pillow raises for files it cannot read (a decompression bomb: DecompressionBombError, not an OSError)
PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
log = logging.getLogger(__name__)
_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class DeepWindow:
    """How an image deeper than 8 bits becomes [0, 1]; 8-bit images keep their 0-255 range whatever this says.

    - ``full_range``: divide by 65535, the 16-bit container's maximum (right when the data fill it);
    - ``min_max``: stretch each image from its minimum to its maximum, which is what the DICOM pipeline does
      for deep data without a VOI window (``cxrsyn.data.dicom.to_display``);
    - ``percentile``: stretch between the ``percentiles`` (low, high) of the image and clip, so that a few
      extreme pixels (burned-in markers, dead detector lines) do not set the contrast.
    """

    method: str = "full_range"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.method not in DEEP_WINDOWS:
            raise CxrsynError(
                f"window {self.method!r} (data.window) is unknown; use one of {', '.join(DEEP_WINDOWS)}"
            )
        low, high = (float(value) for value in self.percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise CxrsynError(
                f"window percentiles {list(self.percentiles)} (data.window_percentiles) must be two numbers "
                "0 <= low < high <= 100"
            )
        object.__setattr__(self, "percentiles", (low, high))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Stored values of a deep image (any numeric array) to float32 in [0, 1]."""
        values = np.asarray(values, dtype=np.float32)
        if self.method == "full_range":
            return np.clip(values / 65535.0, 0.0, 1.0)
        if self.method == "min_max":
            low, high = float(values.min()), float(values.max())
        else:
            low, high = (float(v) for v in np.percentile(values, self.percentiles))
        if high <= low:
            return np.zeros_like(values)
        return np.clip((values - low) / (high - low), 0.0, 1.0)


@contextmanager
def opened(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` without Pillow's decompression-bomb warning (sizes are checked by
    ``check_image_header``); an image Pillow refuses outright (over twice its limit) is one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                yield image
        except Image.DecompressionBombError as error:
            raise CxrsynError(f"image {path} is too large to decode ({error}); {_FIX}") from None


def too_many_pixels(width: int, height: int, limit: int) -> str | None:
    """The reason an image of ``width`` x ``height`` is refused (None when it is within ``limit``)."""
    if width * height <= limit:
        return None
    return (
        f"has {width} x {height} = {width * height:,} pixels, more than max_image_pixels={limit:,} (a "
        "decompression bomb, or not a radiograph; raise the source's max_image_pixels if it is a real image)"
    )


def check_image_header(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str | None:
    """Cheap check (header only, no decode) that ``path`` exists, is an image Pillow can open and has at most
    ``max_pixels`` pixels; returns Pillow's mode (None for DICOM, checked when decoded)."""
    path = Path(path)
    if not path.is_file():
        raise CxrsynError(f"image {path} is listed in the manifest but missing; {_FIX}")
    if path.stat().st_size == 0:
        raise CxrsynError(f"image {path} is empty (0 bytes); {_FIX}")
    if is_dicom(path):
        return None  # DICOM files are checked when they are decoded
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head.startswith(_PNG) and head[12:16] == b"IHDR":  # the size is in the header: checked before Pillow
        problem = too_many_pixels(
            int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), max_pixels
        )
        if problem:
            raise CxrsynError(f"image {path} {problem}; {_FIX}")
    try:
        with opened(path) as image:
            mode, (width, height) = image.mode, image.size
    except (UnidentifiedImageError, OSError) as error:
        raise CxrsynError(f"image {path} is not a readable image ({type(error).__name__}); {_FIX}") from None
    problem = too_many_pixels(width, height, max_pixels)
    if problem:
        raise CxrsynError(f"image {path} {problem}; {_FIX}")
    return mode


def deep_range_warning(path: str | os.PathLike, window: DeepWindow) -> str | None:
    """A warning when a 16-bit image read with ``window=full_range`` uses less than 1/16 of the range (10- or
    12-bit values in a 16-bit PNG: it would decode nearly black); None otherwise."""
    if window.method != "full_range":
        return None
    with opened(path) as image:
        if not image.mode.startswith("I;16"):
            return None
        image.load()
        largest = int(np.asarray(image).max())
    if largest >= DEEP_RANGE_WARNING_MAX:
        return None
    return (
        f"16-bit image {path} holds values up to {largest} (less than 1/16 of 0-65535, about "
        f"{max(1, largest).bit_length()} bits) and window=full_range divides by 65535: it decodes nearly black; "
        "set the source's window=min_max (or percentile), as PadChest does"
    )


def read_grayscale(path: str | os.PathLike, window: DeepWindow | None = None) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ... or DICOM) to a float32 HxW array in [0, 1], bone bright.

    Colour images are converted with ITU-R 601 luma (Pillow's ``L``); 16-bit images keep their precision and
    are mapped to [0, 1] by ``window`` (default: divided by 65535). DICOM files follow their own display
    pipeline (``cxrsyn.data.dicom``), whatever ``window`` says.
    """
    if is_dicom(path):
        return read_dicom(path)
    try:
        with opened(path) as image:
            image.load()
            return _to_unit_float(image, window or DeepWindow())
    except FileNotFoundError:
        raise CxrsynError(f"image {path} is listed in the manifest but missing; {_FIX}") from None
    except PIL_ERRORS as error:
        raise CxrsynError(f"image {path} could not be decoded ({error}); {_FIX}") from None


def _to_unit_float(image: Image.Image, window: DeepWindow) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        if image.mode.startswith("I;16") or array.max() > 255:
            return window.apply(array)
        return np.clip(array / 255.0, 0.0, 1.0)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        return (array - low) / (high - low) if high > low else np.zeros_like(array)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0
