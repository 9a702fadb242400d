"""The embedded data source: a seeded procedural chest-radiograph simulator.

A STAND-IN FOR DEMOS AND TESTS, NOT EVIDENCE ABOUT REAL RADIOGRAPHS. It draws a frontal chest film from the
same attributes as the prompt grid (sex, age band, body habitus, projection): body outline and soft tissue,
lung fields, posterior and anterior ribs, clavicles, spine and mediastinum, heart, hemidiaphragms and, for
pneumonia, consolidation inside the lung fields (lobar or patchy).

Two domains:
- ``generator_like`` imitates what the paper cropped away from Nano Banana output: a square image whose field
  of view runs well below the diaphragm, and a watermark mark in the bottom band. ``shortcut_strength`` sets
  how strongly both defects track the class: 0 = independent of the label, 1 = the watermark appears on every
  pneumonia image and on no normal one, and pneumonia images show more abdomen (unless ``framing_shortcut`` is
  false: then the watermark in the bottom band is the only class-linked defect, all of it removed by the crop).
- ``real_like`` has neither defect, frames the chest the way a radiographer does, and differs in intensity
  statistics (gamma, contrast, quantum noise, blur) and in image size and aspect ratio. ``bottom_mark_rate``
  puts a burned-in label in the bottom-right corner of that share of films, independent of the class, as
  clinical films often have. With ``watermark_shape=label`` the generator's class-linked mark is that same
  label: a positive control in which a model that learned the mark fires on real-like films of either class.

Images are 8-bit PNG, bright = dense (MONOCHROME2), written in the dataset-folder format.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import building, sha256_of_file
from cxrsyn.core.manifest import (
    IMAGES_DIRNAME,
    LABEL_COLUMN,
    PATH_COLUMN,
    manifest_path,
    read_manifest,
    write_manifest,
)
from cxrsyn.core.parallel import usable_cores
from cxrsyn.phantom.grid import DEFAULT_ATTRIBUTES, AttributeGrid, GridCell

# Bump when the drawing changes, so folders made by an older simulator are rebuilt. 3: paediatric habitus
# (children only; adults drawn as in 2). 4: the generator artifacts are settings (watermark_rate, a 'none'
# watermark, field_of_view) and by default no longer tie the field of view to the class (framing_shortcut
# false); records gain lesion_bottom_band_share
PHANTOM_VERSION = 4
SPEC_NAME = "phantom_spec.json"
DOMAINS = ("generator_like", "real_like")
WATERMARK_SHAPES = ("sparkle", "label", "none")
FIELDS_OF_VIEW = ("extended", "chest")
LOBES = {  # side (-1 = patient's right = image left), vertical extent in lung coordinates
    "RUL": (-1, 0.0, 0.38),
    "RML": (-1, 0.38, 0.68),
    "RLL": (-1, 0.60, 1.05),
    "LUL": (1, 0.0, 0.52),
    "LLL": (1, 0.52, 1.05),
}
BOTTOM_BAND = 0.3  # the rows the paper's crop removes (lesion_bottom_band_share)
CHEST_FRAMED_BASE = 0.875  # generator_like with field_of_view=chest: the costophrenic angles, as real_like's
_HABITUS = {  # body half-width (image fraction), soft-tissue load, lung width relative to the body
    "slim": (0.37, 0.12, 0.88),
    "average": (0.41, 0.20, 0.84),
    "obese": (0.46, 0.32, 0.78),
}


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that determines a phantom dataset folder; saved beside it as ``phantom_spec.json``."""

    domain: str = "generator_like"
    n_per_class: int = 150
    seed: int = 0
    image_size: int = 256
    shortcut_strength: float = 0.5
    # true: pneumonia films also show more abdomen (a class-linked field of view that survives the crop)
    framing_shortcut: bool = False
    watermark_size: float = 0.045  # half-width of the sparkle, as a fraction of the image side
    # sparkle (a logo) | label (the burned-in label real-like films can carry) | none
    watermark_shape: str = "sparkle"
    # generator_like: share of images with the watermark at shortcut_strength 0 (strength s moves the share
    # to rate + s (1 - rate) for pneumonia and rate (1 - s) for normal images: at 1, every pneumonia and no
    # normal image)
    watermark_rate: float = 0.5
    # generator_like: extended = the field of view runs well below the diaphragm (the region the paper
    # cropped); chest = framed like a radiographer, like real_like films (the crop then cuts the lung bases)
    field_of_view: str = "extended"
    bottom_mark_rate: float = 0.0  # real_like: share of films with a burned-in label bottom right, any class
    attributes: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    version: int = PHANTOM_VERSION

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise CxrsynError(f"phantom domain {self.domain!r} is unknown; use one of {', '.join(DOMAINS)}")
        if not 0.0 <= self.shortcut_strength <= 1.0:
            raise CxrsynError(f"phantom shortcut_strength={self.shortcut_strength} must lie in [0, 1]")
        if self.watermark_shape not in WATERMARK_SHAPES:
            raise CxrsynError(
                f"phantom watermark_shape={self.watermark_shape!r} is unknown; "
                f"use one of {', '.join(WATERMARK_SHAPES)}"
            )
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise CxrsynError(
                f"phantom field_of_view={self.field_of_view!r} is unknown; use one of {', '.join(FIELDS_OF_VIEW)}"
            )
        if not 0.0 <= self.watermark_rate <= 1.0:
            raise CxrsynError(f"phantom watermark_rate={self.watermark_rate} must lie in [0, 1]")
        if not 0.0 <= self.bottom_mark_rate <= 1.0:
            raise CxrsynError(f"phantom bottom_mark_rate={self.bottom_mark_rate} must lie in [0, 1]")
        if not 0.0 < self.watermark_size <= 0.1:
            raise CxrsynError(
                f"phantom watermark_size={self.watermark_size} must lie in (0, 0.1], so the mark stays in the "
                "bottom 30% of the image"
            )
        if self.image_size < 32:
            raise CxrsynError(f"phantom image_size={self.image_size} is too small; use 32 or more")
        if self.n_per_class < 1:
            raise CxrsynError(f"phantom n_per_class={self.n_per_class} must be at least 1")
        unknown = {
            name: list(values)
            for name, values in self.attributes.items()
            if name in _ATTRIBUTE_VALUES and not set(values) <= _ATTRIBUTE_VALUES[name]
        }
        bad_bands = [band for band in self.attributes.get("age_band", ()) if _band_years(band) is None]
        if bad_bands:
            unknown["age_band"] = bad_bands
        if unknown:
            raise CxrsynError(
                f"phantom cannot draw attribute values {unknown}; it knows {_describe_known_values()}"
            )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["attributes"] = {name: list(values) for name, values in self.attributes.items()}
        return data


_ATTRIBUTE_VALUES = {
    "sex": {"female", "male"},
    "habitus": set(_HABITUS),
    "projection": {"PA erect", "AP supine", "AP erect"},
}
MAX_AGE = 100


def _band_years(band: str) -> tuple[int, int] | None:
    """An age band "low-high" in whole years (0 <= low <= high <= 100), or None."""
    low, separator, high = str(band).partition("-")
    if not (separator and low.isdigit() and high.isdigit()):
        return None
    years = int(low), int(high)
    return years if 0 <= years[0] <= years[1] <= MAX_AGE else None


def _describe_known_values() -> str:
    known = [f"{name}: {', '.join(sorted(values))}" for name, values in _ATTRIBUTE_VALUES.items()]
    return "; ".join([*known, f"age_band: any 'low-high' in years within 0-{MAX_AGE}"])


# ----------------------------------------------------------------------------------------------- drawing
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft_ellipse(u, v, cu, cv, ru, rv, edge):  # noqa: ANN001 - arrays and floats
    return _sigmoid((1.0 - np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)) / edge)


def _band(distance: np.ndarray, half_width: float, edge: float) -> np.ndarray:
    return _sigmoid((half_width - np.abs(distance)) / edge)


def _age_years(band: str, rng: np.random.Generator) -> int:
    low, high = _band_years(band) or (40, 64)
    return int(rng.integers(low, high + 1))


def render(cell: GridCell, spec: PhantomSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one radiograph for ``cell``; returns a uint8 HxW image and the attributes it was drawn with."""
    # Separate streams, so the pneumonia and normal image drawn from one seed share anatomy and style and
    # differ only by the lesion (and, in the generator-like domain, by the class-linked defects).
    rng, lesion_rng, style_rng, artifact_rng = (np.random.default_rng([cell.seed, k]) for k in range(4))
    attributes = cell.attributes
    generator_like = spec.domain == "generator_like"
    sign = 1.0 if cell.label == 1 else -1.0

    # Geometry of the frame: where the lung apices and the costophrenic angles fall.
    if generator_like:
        height = width = spec.image_size
        # pneumonia: diaphragm higher, more abdomen shown (a class-linked framing the bottom crop does not remove)
        fov_shift = 0.06 * spec.shortcut_strength * sign if spec.framing_shortcut else 0.0
        y_apex = 0.07 + rng.uniform(-0.015, 0.015)
        base = 0.60 if spec.field_of_view == "extended" else CHEST_FRAMED_BASE
        y_base = base - fov_shift + rng.uniform(-0.02, 0.02)
    else:
        width = int(round(spec.image_size * rng.uniform(0.9, 1.3)))
        height = int(round(width * rng.uniform(1.0, 1.2)))
        y_apex = rng.uniform(0.05, 0.10)
        y_base = rng.uniform(0.84, 0.91)

    body_half_width, soft_tissue, lung_width = _HABITUS.get(
        attributes.get("habitus", "average"), _HABITUS["average"]
    )
    body_half_width *= rng.uniform(0.95, 1.05)
    age = _age_years(attributes.get("age_band", "40-64"), rng)
    # Children (docs/phantom.md, "paediatric habitus"): how paediatric the proportions are, 1 at age 1 falling
    # to 0 at 12. Every child term below is exactly zero (or a factor of one) for adults, whose films stay as
    # they were; no random draw is added, so an adult's anatomy does not change either.
    youth = float(np.clip((12.0 - age) / 11.0, 0.0, 1.0))
    if age < 18:  # a shorter, rounder thorax with less soft tissue
        y_base -= 0.10 * youth * (y_base - y_apex)
        soft_tissue *= 0.7
    female = attributes.get("sex", "male") == "female"
    supine = attributes.get("projection", "PA erect").startswith("AP")
    if female:
        body_half_width *= 0.96
    if supine:  # AP supine: lower lung volumes, magnified heart, scapulae over the lungs
        y_base -= 0.03 * (y_base - y_apex)

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (x / width - 0.5) / body_half_width
    v = (y / height - y_apex) / (y_base - y_apex)
    edge = 2.0 / (height * (y_base - y_apex))

    # Hemidiaphragms: domes peaking mid-lung; the right one (image left) a little higher.
    dome_centre = 0.45 * lung_width
    right_side = u < 0
    dome = 1.0 - 0.22 * np.clip(1.0 - ((np.abs(u) - dome_centre) / (0.55 * lung_width)) ** 2, 0.0, 1.0)
    dome = dome - np.where(right_side, 0.035, 0.0)
    below_diaphragm = _sigmoid((v - dome) / edge)

    body = _sigmoid((1.0 - np.abs(u) ** 2.4 - np.clip(-v - 0.12, 0, None) ** 2 * 4.0) / (edge * 3))
    neck = _band(u, 0.28, edge * 2) * _sigmoid((-v - 0.08) / edge)
    body = np.maximum(body, neck) * _sigmoid((v + 0.45) / edge)

    attenuation = body * (0.45 + soft_tissue)

    # Lung fields: apex narrow, widening to the bases; medial edge at the mediastinum.
    outer = lung_width * (0.45 + 0.55 * np.sqrt(np.clip(v + 0.04, 0.0, 1.0)))
    medial = 0.10 + 0.04 * np.clip(v, 0, 1)
    apex = _sigmoid((v + 0.02 - 0.25 * (np.abs(u) - 0.45 * lung_width) ** 2) / edge)
    lungs = (
        _sigmoid((outer - np.abs(u)) / edge)
        * _sigmoid((np.abs(u) - medial) / edge)
        * apex
        * (1.0 - below_diaphragm)
    )
    hilum_distance = np.sqrt((np.abs(u) - 0.22) ** 2 + ((v - 0.45) * 0.8) ** 2)
    texture = gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 1.2)
    markings = 0.05 * np.clip(1.0 - hilum_distance, 0, 1) * (0.6 + 0.4 * texture)
    attenuation -= lungs * (0.42 - soft_tissue * 0.35) - lungs * markings

    # Mediastinum, spine, trachea, aortic knob.
    attenuation += 0.30 * _band(u, 0.12 + 0.04 * np.clip(v, 0, 1), edge) * _sigmoid((1.05 - v) / edge)
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * v / 0.085) ** 2
    attenuation += 0.12 * _band(u, 0.065, edge) * vertebrae * body
    attenuation -= 0.18 * _band(u, 0.028, edge) * _sigmoid((0.32 - v) / edge) * body
    if age >= 55:
        attenuation += 0.18 * _soft_ellipse(u, v, 0.13, 0.28, 0.07, 0.05, 0.15)
    if age < 6:  # the thymus: a sail-shaped widening of the upper mediastinum, mostly to the patient's right
        thymus = 0.16 * (6.0 - age) / 5.0
        attenuation += thymus * _soft_ellipse(u, v, -0.13, 0.30, 0.16, 0.13, 0.25)
        attenuation += 0.6 * thymus * _soft_ellipse(u, v, 0.12, 0.32, 0.11, 0.11, 0.25)

    # Heart: cardiothoracic ratio grows with age in adults and is larger in young children (about 0.5 at 1,
    # the adult value from 15); AP magnifies it.
    child_heart = 0.10 * float(np.clip((15.0 - age) / 14.0, 0.0, 1.0))
    cardiothoracic = (
        0.43
        + 0.0015 * (max(age, 18) - 40)
        + child_heart
        + rng.uniform(-0.03, 0.03)
        + (0.05 if supine else 0.0)
    )
    heart_half_width = cardiothoracic * lung_width
    heart = _soft_ellipse(u, v, 0.14 * lung_width, 0.74, heart_half_width, 0.27, 0.05)
    attenuation += 0.55 * heart * (1.0 - below_diaphragm)

    # Ribs: posterior (near horizontal, curving down laterally) and fainter anterior (sloping medially),
    # drawn as one periodic pattern each rather than rib by rib.
    bone = (
        np.clip(1.15 - 0.006 * (age - 30), 0.6, 1.2) if age >= 18 else 0.75 + 0.025 * age
    )  # thinner in children
    rib_zone = (
        _band(u, lung_width * 1.02, edge)
        * (1.0 - _band(u, 0.07, edge))
        * (1.0 - below_diaphragm)
        * _sigmoid((v + 0.06) / edge)
    )
    spacing = 0.1 * (0.94 if supine else 1.0) * rng.uniform(0.95, 1.05)
    lateral = np.abs(u) / lung_width
    flatter = 1.0 - 0.5 * youth  # young children's ribs run more horizontally
    posterior = np.cos(2 * np.pi * (v - 0.11 * flatter * lateral**2) / spacing)
    anterior = np.cos(2 * np.pi * (v + 0.16 * flatter * lateral) / (spacing * 1.1))
    ribs = 0.07 * _sigmoid((posterior - 0.45) / 0.12) + 0.04 * _sigmoid((anterior - 0.5) / 0.15) * (
        lateral > 0.2
    )
    attenuation += ribs * rib_zone * bone

    # Clavicles: higher and flatter on AP films.
    for side in (-1.0, 1.0):
        start_u, end_u = 0.1 * side, 0.75 * side
        rise = -0.02 if supine else -0.10
        along = np.clip((u - start_u) / (end_u - start_u), 0.0, 1.0)
        centre_v = -0.01 + rise * along
        inside = _sigmoid(((u - start_u) * side) / edge) * _sigmoid(((end_u - u) * side) / edge)
        attenuation += 0.20 * bone * _band(v - centre_v, 0.03, edge) * inside
        if supine:  # scapular borders over the lateral lung fields
            scapula = _soft_ellipse(u, v, side * 0.92 * lung_width, 0.25, 0.16, 0.28, 0.1)
            attenuation += 0.07 * scapula

    if female and age >= 13:  # breast shadows from puberty on
        breast = min((age - 12) / 4.0, 1.0)
        for side in (-1.0, 1.0):
            attenuation += (
                breast * (0.06 + soft_tissue * 0.2) * _soft_ellipse(u, v, side * 0.52, 0.92, 0.3, 0.2, 0.25)
            )

    # Abdomen below the diaphragm, with the gastric bubble under the left hemidiaphragm.
    attenuation += below_diaphragm * body * 0.40
    attenuation -= 0.22 * _soft_ellipse(u, v, 0.45 * lung_width, 1.02, 0.14, 0.06, 0.2) * below_diaphragm

    finding = "clear lungs"
    lesion_in_band = None
    if cell.label == 1:
        finding, opacity = _consolidation(u, v, lungs, edge, lesion_rng)
        attenuation += opacity
        band_start = height - math.ceil(round(BOTTOM_BAND * height, 9))  # the paper's crop, its rounding
        lesion_in_band = round(float(opacity[band_start:].sum() / max(opacity.sum(), 1e-12)), 4)

    image = _style(attenuation, body, style_rng, generator_like)
    watermark = 0
    if generator_like:
        rate, strength = spec.watermark_rate, spec.shortcut_strength
        share = rate + strength * (1.0 - rate) if cell.label == 1 else rate - strength * rate
        watermark = int(artifact_rng.random() < share and spec.watermark_shape != "none")
        if watermark:
            image = (
                _stamp_bottom_label(image)
                if spec.watermark_shape == "label"
                else _stamp_watermark(image, spec.watermark_size)
            )
    else:
        image = _stamp_side_marker(image, artifact_rng)
        if artifact_rng.random() < spec.bottom_mark_rate:
            image = _stamp_bottom_label(image)

    record = {
        "sex": attributes.get("sex"),
        "age_band": attributes.get("age_band"),
        "age": age,
        "habitus": attributes.get("habitus"),
        "projection": attributes.get("projection"),
        "finding": finding,
        "domain": spec.domain,
        "watermark": watermark,
        "below_diaphragm_fraction": round(1.0 - y_base, 3),
        # share of the lesion's opacity in the bottom 30% of the rows, which the paper's crop removes
        "lesion_bottom_band_share": lesion_in_band,
        "cardiothoracic_ratio": round(float(cardiothoracic), 3),
        "thymus": int(age < 6),
        "breast_shadows": int(female and age >= 13),
        "width": width,
        "height": height,
    }
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), record


def _consolidation(u, v, lungs, edge, rng: np.random.Generator) -> tuple[str, np.ndarray]:  # noqa: ANN001
    """Airspace opacity confined to the lung fields: one lobe, or patchy foci (uni- or bilateral)."""
    height, width = u.shape
    lumpy = gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), max(2.0, width / 40))
    lumpy = 0.75 + 0.25 * lumpy / (np.abs(lumpy).max() + 1e-6)
    if rng.random() < 0.5:
        lobe = str(rng.choice(list(LOBES)))
        side, top, bottom = LOBES[lobe]
        ragged = 0.06 * lumpy
        region = (
            _sigmoid((v - top - ragged) / (edge * 3))
            * _sigmoid((bottom + ragged - v) / (edge * 3))
            * _sigmoid(side * u / edge)
        )
        density = rng.uniform(0.28, 0.40)
        return f"lobar consolidation {lobe}", density * region * lumpy * lungs
    bilateral = rng.random() < 0.6
    sides = (-1.0, 1.0) if bilateral else (float(rng.choice([-1.0, 1.0])),)
    opacity = np.zeros_like(u)
    for _ in range(int(rng.integers(3, 8))):
        side = sides[int(rng.integers(len(sides)))]
        centre_u = side * rng.uniform(0.25, 0.65)
        centre_v = rng.uniform(0.25, 0.9)
        radius = rng.uniform(0.06, 0.14)
        opacity += rng.uniform(0.18, 0.30) * _soft_ellipse(
            u, v, centre_u, centre_v, radius, radius * 1.2, 0.35
        )
    spread = "bilateral" if bilateral else ("right" if sides[0] < 0 else "left")
    return f"patchy opacities {spread}", np.clip(opacity, 0, 0.45) * lumpy * lungs


def _style(
    attenuation: np.ndarray, body: np.ndarray, rng: np.random.Generator, generator_like: bool
) -> np.ndarray:
    """Map attenuation to display intensity (1 - exp(-k A), as film darkening saturates) with each domain's look."""
    if generator_like:  # clean, high contrast, smooth
        image = (1.0 - np.exp(-1.8 * attenuation)) * 1.12
        image = gaussian_filter(image, 0.6)
        return image + rng.normal(0, 0.004, image.shape).astype(np.float32)
    gain = rng.uniform(1.3, 1.9)
    gamma = rng.uniform(1.0, 1.3)
    offset = rng.uniform(0.0, 0.06)
    image = np.clip((1.0 - np.exp(-gain * attenuation)) + offset, 0, 1) ** gamma
    image = gaussian_filter(image, rng.uniform(0.8, 1.4))
    mottle = rng.normal(0, 0.02, image.shape).astype(np.float32) * (0.5 + 0.5 * body)
    return image + mottle


def _stamp_watermark(image: np.ndarray, size_fraction: float) -> np.ndarray:
    """A four-pointed sparkle in the bottom-right corner, like the logo on AI-generated images."""
    height, width = image.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    size = size_fraction * min(height, width)
    cy, cx = height - 1.9 * size, width - 1.9 * size  # up to 0.1, the sparkle stays in the bottom 30%
    dy, dx = np.abs(y - cy) / size, np.abs(x - cx) / size
    star = np.sqrt(dx) + np.sqrt(dy) < 1.0
    out = image.copy()
    out[star] = 0.92
    return out


def _stamp_bottom_label(image: np.ndarray) -> np.ndarray:
    """A burned-in label (a bright bar) in the bottom-right corner, as on many clinical films."""
    height, width = image.shape
    bar_height, bar_width = max(2, int(0.06 * height)), max(4, int(0.22 * width))
    top, left = height - int(0.05 * height) - bar_height, width - int(0.05 * width) - bar_width
    out = image.copy()
    out[top : top + bar_height, left : left + bar_width] = 0.92
    return out


def _stamp_side_marker(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lead side marker (a bright block) in an upper corner on about half of the films."""
    if rng.random() < 0.5:
        return image
    height, width = image.shape
    size = max(3, int(0.04 * width))
    top = int(0.03 * height)
    left = int(0.04 * width) if rng.random() < 0.5 else width - int(0.04 * width) - size
    out = image.copy()
    out[top : top + size, left : left + size] = 0.95
    return out


# ----------------------------------------------------------------------------------------- dataset folder
def write_phantom_dataset(
    out_dir: str | os.PathLike, spec: PhantomSpec, show_progress: bool = True, workers: int | None = None
) -> Path:
    """Write a phantom dataset folder, or reuse it when it was already made from the same spec.

    The folder is built beside its destination and moved into place when complete, so a crash never leaves
    a half-written folder that looks finished.
    """
    out_dir = Path(out_dir)
    with building(out_dir):  # parallel jobs sharing a folder: one writes it, the others wait and reuse it
        return _write_phantom_dataset(out_dir, spec, show_progress, workers)


def _write_phantom_dataset(
    out_dir: Path, spec: PhantomSpec, show_progress: bool, workers: int | None
) -> Path:
    if is_current(out_dir, spec):
        return out_dir
    cells = AttributeGrid(spec.attributes).sample(spec.n_per_class, spec.seed)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / IMAGES_DIRNAME).mkdir(parents=True)
    jobs = [(cell, spec, partial) for cell in cells]
    workers = min(workers or usable_cores(), max(1, len(cells) // 16))
    progress = tqdm(
        total=len(cells), desc=f"phantom {spec.domain} -> {out_dir}", disable=not show_progress, unit="img"
    )
    rows = []
    with progress, contextlib.ExitStack() as stack:
        if workers == 1:
            results = map(_write_one, jobs)
        else:
            # Each image has its own seed, so the result does not depend on the number of workers.
            pool = stack.enter_context(
                ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            )
            results = pool.map(_write_one, jobs, chunksize=8)
        for row in results:
            rows.append(row)
            progress.update()
    if len(rows) != len(cells):
        raise RuntimeError(f"phantom wrote {len(rows)} of {len(cells)} images")
    write_manifest(partial, rows)
    (partial / SPEC_NAME).write_text(json.dumps(spec.as_json(), indent=2, sort_keys=True) + "\n")
    if out_dir.exists():
        stale = out_dir.with_name(f".{out_dir.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(out_dir, stale)
        os.replace(partial, out_dir)
        shutil.rmtree(stale)
    else:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, out_dir)
    return out_dir


def _write_one(job: tuple[GridCell, PhantomSpec, Path]) -> dict[str, Any]:
    cell, spec, folder = job
    pixels, record = render(cell, spec)
    relative = f"{IMAGES_DIRNAME}/{cell.class_name}_{cell.index:05d}.png"
    Image.fromarray(pixels, mode="L").save(folder / relative, compress_level=1)
    return {
        PATH_COLUMN: relative,
        LABEL_COLUMN: cell.label,
        **record,
        "generator": "phantom",
        "seed": cell.seed,
        "sha256": sha256_of_file(folder / relative),
    }


def is_current(out_dir: Path, spec: PhantomSpec) -> bool:
    """True when ``out_dir`` holds a complete phantom folder made from exactly ``spec``."""
    spec_path = out_dir / SPEC_NAME
    if not (spec_path.is_file() and manifest_path(out_dir).is_file()):
        return False
    try:
        if json.loads(spec_path.read_text()) != spec.as_json():
            return False
        table = read_manifest(out_dir)
    except (json.JSONDecodeError, CxrsynError):
        return False
    return len(table) == 2 * spec.n_per_class and all((out_dir / p).is_file() for p in table[PATH_COLUMN])
