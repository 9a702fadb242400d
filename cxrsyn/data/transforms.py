"""Image transforms (albumentations): the bottom crop, resize policies, and train/eval pipelines.

Images enter as float32 HxW arrays in [0, 1] and leave as 1xHxW tensors in [0, 1]; intensity normalisation
belongs to the model, whose backbone knows its own mean and std.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from cxrsyn.core.errors import CxrsynError

RESIZE_POLICIES = ("stretch", "letterbox", "center_crop")


def rows_kept(height: int, fraction: float) -> int:
    """Rows left after cutting the bottom ``fraction`` of an image ``height`` rows tall, as stored (before any
    resize): ceil(fraction x height) rows are removed, at least one row is kept. The product is rounded to
    9 decimals first, so 0.3 x 10 removes 3 rows, not 4 (0.3 x 10 is 3.0000000000000004 in floating point)."""
    if not 0.0 <= fraction < 1.0:
        raise CxrsynError(f"crop_bottom_fraction={fraction} must lie in [0, 1)")
    removed = math.ceil(round(fraction * height, 9))
    return max(1, height - removed)


def crop_bottom(image: np.ndarray, fraction: float) -> np.ndarray:
    """Cut away the bottom ``fraction`` of the rows (the paper's post-processing uses 0.3); see ``rows_kept``."""
    return image[: rows_kept(image.shape[0], fraction)]


class CropBottom(A.ImageOnlyTransform):
    """``crop_bottom`` as an albumentations transform, so a sweep over fractions needs no copied images."""

    def __init__(self, fraction: float = 0.3, p: float = 1.0):
        super().__init__(p=p)
        crop_bottom(np.zeros((2, 2), np.float32), fraction)  # validate once, here
        self.fraction = fraction

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return crop_bottom(img, self.fraction)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("fraction",)


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation. No horizontal flip by default: it would move the heart to the right."""

    rotate_degrees: float = 7.0
    scale: tuple[float, float] = (0.92, 1.08)
    translate: float = 0.04
    affine_p: float = 0.7
    brightness_contrast: float = 0.15
    brightness_contrast_p: float = 0.5
    hflip_p: float = 0.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Augmentation:
        values = dict(config or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise CxrsynError(
                f"datamodule.augmentation has unknown key(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        if "scale" in values:
            values["scale"] = tuple(values["scale"])
        return cls(**values)


def resize_ops(image_size: int, policy: str) -> list[A.BasicTransform]:
    if policy == "stretch":
        return [A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA)]
    if policy == "letterbox":
        return [
            A.LongestMaxSize(max_size=image_size, interpolation=cv2.INTER_AREA),
            A.PadIfNeeded(image_size, image_size, border_mode=cv2.BORDER_CONSTANT, fill=0.0),
        ]
    if policy == "center_crop":
        return [
            A.SmallestMaxSize(max_size=image_size, interpolation=cv2.INTER_AREA),
            A.CenterCrop(image_size, image_size),
        ]
    raise CxrsynError(f"datamodule.resize={policy!r} is unknown; use one of {', '.join(RESIZE_POLICIES)}")


@functools.lru_cache(maxsize=64)
def source_band_weights(
    height: int, width: int, crop_fraction: float, band_fraction: float, image_size: int, policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Where the bottom ``band_fraction`` of a stored image (``height`` x ``width``, before any crop) lands
    in the model's input: ``(content, band)``, both image_size x image_size float32. ``content`` is 1 on
    pixels showing the image and 0 on padding (letterbox), fractional on edges; ``band`` is 1 where the
    pixel's source row lies in the band (rows ``rows_kept(height, band_fraction)`` and below of the stored
    image). Computed by sending a row-coordinate image through the same crop and resize as the image."""
    kept = rows_kept(height, crop_fraction) if crop_fraction > 0 else height
    geometry = A.Compose(resize_ops(image_size, policy))
    ones = np.ones((kept, width), np.float32)
    centres = np.repeat(np.arange(kept, dtype=np.float32)[:, None] + 0.5, width, axis=1)
    content = geometry(image=ones)["image"]
    summed = geometry(image=centres)["image"]  # resizing is linear: content-weighted mean source row
    source_row = np.divide(summed, content, out=np.zeros_like(summed), where=content > 1e-6)
    band = ((source_row >= rows_kept(height, band_fraction)) & (content > 1e-6)).astype(np.float32)
    return content, band


def build_transform(
    image_size: int,
    resize: str,
    crop_bottom_fraction: float = 0.0,
    augmentation: Augmentation | None = None,
    already_sized: bool = False,
) -> A.Compose:
    """Crop, resize, augment (training only: pass ``augmentation``), clip to [0, 1], to tensor.

    ``already_sized``: the images were cropped and resized before (the decode-once cache): skip both.
    """
    ops: list[A.BasicTransform] = []
    if crop_bottom_fraction > 0 and not already_sized:
        ops.append(CropBottom(crop_bottom_fraction))
    if not already_sized:
        ops.extend(resize_ops(image_size, resize))
    if augmentation is not None:
        if augmentation.hflip_p > 0:
            ops.append(A.HorizontalFlip(p=augmentation.hflip_p))
        ops.append(
            A.Affine(
                scale=augmentation.scale,
                translate_percent=(-augmentation.translate, augmentation.translate),
                rotate=(-augmentation.rotate_degrees, augmentation.rotate_degrees),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0.0,
                p=augmentation.affine_p,
            )
        )
        ops.append(
            A.RandomBrightnessContrast(
                brightness_limit=augmentation.brightness_contrast,
                contrast_limit=augmentation.brightness_contrast,
                p=augmentation.brightness_contrast_p,
            )
        )
    ops.append(A.Lambda(image=_clip_unit, name="clip_unit"))
    ops.append(ToTensorV2())
    return A.Compose(ops)


def _clip_unit(image: np.ndarray, **_: Any) -> np.ndarray:
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
