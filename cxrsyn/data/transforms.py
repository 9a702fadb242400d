"""Image transforms (albumentations): the bottom crop, resize policies, and train/eval pipelines.

Images enter as float32 HxW arrays in [0, 1] and leave as 1xHxW tensors in [0, 1]; intensity normalisation
belongs to the model, whose backbone knows its own mean and std.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from cxrsyn.errors import CxrsynError

RESIZE_POLICIES = ("letterbox", "stretch", "center_crop")


def crop_bottom(image: np.ndarray, fraction: float) -> np.ndarray:
    """Cut away the bottom ``fraction`` of the rows (the paper's post-processing uses 0.3)."""
    if not 0.0 <= fraction < 1.0:
        raise CxrsynError(f"crop_bottom_fraction={fraction} must lie in [0, 1)")
    keep = max(1, int(round(image.shape[0] * (1.0 - fraction))))
    return image[:keep]


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
