"""Part 6, realism: can the audited set be told from real films, where does the difference lie, and does
the paper's bottom crop remove it?

For each reference set, a detector is trained to separate the audited (synthetic) images from a sample of
the reference (real) images, by grouped cross-validation (``folds``-fold ``StratifiedGroupKFold``: the
images of one prompt, or of one patient, never straddle folds), and every image is scored by the model of
the fold that held it out. The out-of-fold AUROC is 0.5 when the sets cannot be told apart; its interval is
``cxrsyn.evaluation.statistics.out_of_fold_auroc`` (group-clustered bootstrap, widened for cross-fitting).

Two detectors:

- ``cnn``: a timm backbone from scratch (default resnet18, stages narrowed to 16-128 channels) on ``cnn.image_size`` px
  inputs, a few epochs. Where it looks, by occlusion: for each audited image, the drop of its score when
  one region is replaced by the mean real film of the training folds (the real films' pixels there), for
  five regions of the audited image as read (its source frame): the bottom band (the rows the paper's crop
  removes), the top band, the side borders, the lungs and the rest. They partition the frame; each region's
  share is its part of the image's positive drops, averaged over images; ``area`` gives its share of the
  input. The lungs are approximated per image from intensity (``lung_mask``).
- ``statistics``: logistic regression on image statistics a person can name: the intensity histogram, the
  radially averaged power spectrum (noise texture, sharpness) and edge density (Sobel magnitudes); also
  each family alone (``by_feature_group``): if one suffices, so does a trivial cue.

Crops: the whole measurement is repeated after cutting the bottom ``crop_fraction`` of the audited images
(``rows_kept`` rounding, the paper's crop): the CNN sees the kept rows stretched to its input, as a
classifier would; the statistics see them as decoded, without resampling (which would change the noise
spectrum of one set only). ``crop_reference: false`` leaves the
reference films whole, as the paper tested on whole films: does the crop make the training images look like
the test images? ``true`` cuts both sets alike and so localises the giveaway: the AUROC falls to 0.5 exactly
when everything that tells the sets apart lies in the removed rows.

The reference sample has the audited set's class balance (so the detector cannot use the share of
pneumonia), ``reference_n`` images (null: as many as the audited set).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy import ndimage
from tqdm.auto import tqdm

from cxrsyn.auditing.sets import ImageSet, decode_rows
from cxrsyn.core.compose import settings_as
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import PATH_COLUMN
from cxrsyn.data.transforms import rows_kept
from cxrsyn.evaluation.statistics import out_of_fold_auroc

DETECTORS = ("cnn", "statistics")
REGIONS = ("bottom_band", "top_band", "borders", "lungs", "other")
FEATURE_GROUPS = ("histogram", "noise_power", "edges")
EDGE_THRESHOLDS = (0.02, 0.05, 0.1)  # per-pixel intensity change (Sobel magnitude / 4) counted as an edge


@dataclass(frozen=True)
class CnnSettings:
    backbone: str = "resnet18"
    image_size: int = 64
    epochs: int = 6
    batch_size: int = 16
    lr: float = 3e-3  # the one-cycle schedule's peak
    weight_decay: float = 1e-4
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  # to timm.create_model (e.g. channels)


@dataclass(frozen=True)
class StatisticsSettings:
    histogram_bins: int = 16
    spectrum_bands: int = 8
    C: float = 1.0  # inverse L2 strength of the logistic regression (features standardised)


@dataclass(frozen=True)
class RegionSettings:
    bottom_band: float = 0.3  # the paper's crop
    top_band: float = 0.15
    borders: float = 0.1  # each side
    grid: int = 64  # source frame on which shares are measured


@dataclass(frozen=True)
class RealismSettings:
    """The ``realism`` block of ``conf/audit.yaml`` (which says what each entry does)."""

    enabled: bool = True
    detectors: Sequence[str] = DETECTORS
    crop_fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3)
    crop_reference: bool = False
    folds: int = 3
    reference_n: int | None = None
    group_by: Sequence[str] = ("prompt", "patient")
    n_resamples: int = 1000
    alpha: float = 0.05
    n_show: int = 8
    cnn: CnnSettings = field(default_factory=CnnSettings)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)
    regions: RegionSettings = field(default_factory=RegionSettings)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> RealismSettings:
        nested = {
            "cnn": settings_as(CnnSettings, dict(section.get("cnn") or {}), "realism.cnn"),
            "statistics": settings_as(
                StatisticsSettings, dict(section.get("statistics") or {}), "realism.statistics"
            ),
            "regions": settings_as(RegionSettings, dict(section.get("regions") or {}), "realism.regions"),
        }
        flat = {key: tuple(value) if isinstance(value, list) else value for key, value in section.items()}
        settings = settings_as(cls, {**flat, **nested}, "realism")
        unknown = sorted(set(settings.detectors) - set(DETECTORS))
        if unknown:
            raise CxrsynError(f"realism.detectors has unknown {unknown}; use {' and/or '.join(DETECTORS)}")
        if not settings.crop_fractions or any(not 0.0 <= f < 1.0 for f in settings.crop_fractions):
            raise CxrsynError(
                f"realism.crop_fractions={list(settings.crop_fractions)} must be a non-empty list of fractions "
                "in [0, 1), e.g. [0, 0.1, 0.2, 0.3]"
            )
        if settings.folds < 2:
            raise CxrsynError(f"realism.folds={settings.folds} must be at least 2")
        return settings


# ------------------------------------------------------------------------------------------------ inputs
def cut_bottom(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """(N, 1, H, W) images without their bottom ``fraction`` of rows (``rows_kept``: the paper's crop)."""
    return images[..., : rows_kept(images.shape[-2], fraction), :] if fraction > 0 else images


def stretch(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, h, w) images resized to ``size`` x ``size`` (bilinear, antialiased), as the audit's stretch."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def reference_sample(labels: np.ndarray, audited_labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Rows of the reference set drawn without replacement with the audited set's class balance: ``n``
    images (None: as many as the audited set), fewer where a class runs out. Sorted."""
    n = len(audited_labels) if n is None else int(n)
    rng = np.random.default_rng([seed, 5])
    rows = []
    share = float(np.mean(audited_labels)) if len(audited_labels) else 0.5
    for label, wanted in ((1, int(round(n * share))), (0, n - int(round(n * share)))):
        candidates = np.flatnonzero(labels == label)
        rows.append(rng.choice(candidates, min(wanted, len(candidates)), replace=False))
    return np.sort(np.concatenate(rows)).astype(int)


def audited_groups(table: pd.DataFrame, group_by: Sequence[str]) -> tuple[np.ndarray, str]:
    """The audited images' groups: the first ``group_by`` column the table has (else each image its own)."""
    for column in group_by:
        if column in table.columns and table[column].notna().all():
            return table[column].astype(str).to_numpy(), column
    return table[PATH_COLUMN].astype(str).to_numpy(), "none (each image its own group)"


def out_of_fold(
    y: np.ndarray,
    groups: np.ndarray,
    folds: int,
    seed: int,
    fit_predict: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every item from a model fitted without its group: ``fit_predict(train_rows, test_rows,
    fold)`` returns the scores of ``test_rows``. ``StratifiedGroupKFold`` (shuffled, seeded) keeps each
    group in one fold and the class balance in each. Returns (scores, fold of each item)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = min(len(np.unique(groups[y == label])) for label in (0, 1))
    if n_groups < folds:
        raise CxrsynError(
            f"realism: a set has {n_groups} group(s), fewer than realism.folds={folds}; lower realism.folds"
        )
    scores = np.full(len(y), np.nan)
    fold_of = np.full(len(y), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        scores[test] = fit_predict(train, test, fold)
        fold_of[test] = fold
    return scores, fold_of


# ------------------------------------------------------------------------------------ statistics detector
def image_statistics(images: torch.Tensor, bins: int, bands: int) -> dict[str, np.ndarray]:
    """Per image (N, 1, H, W in [0, 1]) the features of each family: ``histogram`` (share of pixels in
    each of ``bins`` equal intensity bins), ``noise_power`` (log10 mean power of the Hann-windowed,
    mean-removed image in ``bands`` equal bands of radial frequency over (0, 0.5] cycles/pixel) and
    ``edges`` (mean Sobel magnitude / 4, and the share of pixels above each of ``EDGE_THRESHOLDS``)."""
    x = images[:, 0].double().numpy()
    n, height, width = x.shape
    index = np.clip((x * bins).astype(int), 0, bins - 1).reshape(n, -1)
    histogram = np.stack([np.bincount(row, minlength=bins) for row in index]) / (height * width)

    window = np.outer(np.hanning(height), np.hanning(width))
    centred = (x - x.mean(axis=(1, 2), keepdims=True)) * window
    # the power of a real image is symmetric, so the half plane of rfft2 holds it all: each of its columns
    # stands for itself and its mirror (all but the zero and Nyquist columns), and the band means are those
    # of the full plane, as one matrix product
    power = np.abs(np.fft.rfft2(centred)) ** 2 / (window**2).sum()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.rfftfreq(width), indexing="ij"))
    mirrored = np.full(radius.shape[1], 2.0)
    mirrored[0] = 1.0
    if width % 2 == 0:
        mirrored[-1] = 1.0
    edges_of_bands = np.linspace(0.0, 0.5, bands + 1)
    band_of = np.digitize(radius, edges_of_bands[1:-1], right=True)  # band 0 holds (0, 0.5 / bands]
    valid = (radius > 0) & (radius <= 0.5)
    weights = np.stack([(valid & (band_of == band)) * mirrored for band in range(bands)], axis=-1)
    weights = weights.reshape(-1, bands) / weights.reshape(-1, bands).sum(axis=0)
    spectrum = power.reshape(n, -1) @ weights
    noise_power = np.log10(spectrum + 1e-20)

    # Sobel on each image's own two axes (ndimage.sobel on the stack would also smooth across images)
    gy = ndimage.correlate1d(
        ndimage.correlate1d(x, [-1, 0, 1], axis=1, mode="nearest"), [1, 2, 1], axis=2, mode="nearest"
    )
    gx = ndimage.correlate1d(
        ndimage.correlate1d(x, [-1, 0, 1], axis=2, mode="nearest"), [1, 2, 1], axis=1, mode="nearest"
    )
    magnitude = np.hypot(gx, gy).reshape(n, -1) / 4.0
    edges = np.column_stack(
        [magnitude.mean(axis=1)] + [(magnitude > t).mean(axis=1) for t in EDGE_THRESHOLDS]
    )
    return {"histogram": histogram, "noise_power": noise_power, "edges": edges}


def _logistic_fit_predict(features: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit_predict(train: np.ndarray, test: np.ndarray, fold: int) -> np.ndarray:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        model.fit(features[train], y[train])
        return model.decision_function(features[test])

    return fit_predict


# ------------------------------------------------------------------------------------------ CNN detector
class _Detector(torch.nn.Module):
    """A timm backbone with one logit (synthetic), on (N, 1, S, S) images in [0, 1]."""

    def __init__(self, settings: CnnSettings):
        super().__init__()
        import timm

        from cxrsyn.models.backbone import check_backbone_name

        check_backbone_name(settings.backbone)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.model_kwargs.items()}
        try:
            self.net = timm.create_model(
                settings.backbone, pretrained=False, num_classes=1, in_chans=1, **kwargs
            )
        except TypeError as error:
            raise CxrsynError(
                f"realism.cnn.model_kwargs={dict(settings.model_kwargs)} do not fit {settings.backbone!r} "
                f"({error}); fix or empty them"
            ) from None
        # channels-last convolutions: about 1.4 times the images/s of the default layout on a CPU
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        return (images - 0.5) / 0.25

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.normalise(images).contiguous(memory_format=torch.channels_last)
        return self.net(inputs)[:, 0]


def train_detector(images: torch.Tensor, y: np.ndarray, settings: CnnSettings, seed: int) -> _Detector:
    """A detector trained from scratch (AdamW, binary cross-entropy) for ``settings.epochs`` epochs."""
    torch.manual_seed(seed)
    detector = _Detector(settings)
    optimizer = torch.optim.AdamW(  # fused: one kernel per step, not one per tensor
        detector.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True
    )
    targets = torch.as_tensor(y, dtype=torch.float32)
    order_rng = torch.Generator().manual_seed(seed)
    batches = [
        order[start : start + settings.batch_size]
        for order in (torch.randperm(len(images), generator=order_rng) for _ in range(settings.epochs))
        for start in range(0, len(order), settings.batch_size)
        if len(order[start : start + settings.batch_size]) >= 2  # batch norm needs two
    ]
    # one cycle (warm-up, then cosine decay to ~0): from scratch in a few hundred steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=max(1, len(batches))
    )
    detector.train()
    for batch in batches:
        loss = F.binary_cross_entropy_with_logits(detector(images[batch]), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return detector.eval()


# --------------------------------------------------------------------------------------------- regions
def lung_mask(image: np.ndarray, box: tuple[int, int, int, int], steps: int = 12) -> np.ndarray:
    """An approximation of the lung fields of one image (G x G, bone bright), inside ``box`` (top, bottom,
    left, right: between the bands and the borders): of the lightly blurred image, the pixels darker than a
    threshold, in connected regions that reach neither the box's left nor its right side (air and soft tissue
    beside the lungs do) and cover at least 1% of the box, holes filled. The threshold is the one of
    ``steps`` between the box's Otsu threshold and its 2nd percentile that keeps the most such area: high
    thresholds join the lungs to the soft tissue at the sides, low ones shrink them. Bool G x G."""
    top, bottom, left, right = box
    inside = ndimage.gaussian_filter(image.astype(np.float64), 1.0)[top:bottom, left:right]
    best = np.zeros(inside.shape, bool)
    for threshold in np.linspace(_otsu(inside), np.quantile(inside, 0.02), steps):
        labelled, count = ndimage.label(inside < threshold)
        if not count:
            continue
        touching = set(labelled[:, 0]) | set(labelled[:, -1])
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        keep = [n for n in range(1, count + 1) if n not in touching and sizes[n] >= 0.01 * inside.size]
        kept = np.isin(labelled, keep)
        if kept.sum() > best.sum():
            best = kept
    mask = np.zeros(image.shape, bool)
    mask[top:bottom, left:right] = ndimage.binary_fill_holes(best)
    return mask


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold: the cut of a ``bins``-bin histogram that maximises the between-class variance."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = ((counts * centres).sum() - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][int(np.argmax(between))])


def region_masks(image: np.ndarray, settings: RegionSettings) -> dict[str, np.ndarray]:
    """The five regions of ``REGIONS`` on one G x G image, a partition of the frame (bool masks)."""
    grid = image.shape[0]
    bottom = rows_kept(grid, settings.bottom_band)
    top = int(round(settings.top_band * grid))
    side = int(round(settings.borders * grid))
    masks = {name: np.zeros((grid, grid), bool) for name in REGIONS}
    masks["bottom_band"][bottom:] = True
    masks["top_band"][:top] = True
    middle = np.zeros((grid, grid), bool)
    middle[top:bottom] = True
    masks["borders"][top:bottom, :side] = True
    masks["borders"][top:bottom, grid - side :] = True
    masks["lungs"] = lung_mask(image, (top, bottom, side, grid - side))
    masks["other"] = middle & ~masks["borders"] & ~masks["lungs"]
    return masks


def input_masks(masks: Sequence[dict[str, np.ndarray]], fraction: float, size: int) -> torch.Tensor:
    """(N, R, S, S) bool: each image's regions (``region_masks``, source frame G x G) as the CNN sees them
    after a crop of ``fraction``: the rows the crop keeps (``rows_kept(G, fraction)``), stretched to S x S by
    nearest neighbour, so they still partition the input; regions the crop removed are empty."""
    stacked = np.stack([np.stack([m[name] for name in REGIONS]) for m in masks]).astype(np.float32)
    grid = stacked.shape[-1]
    kept = rows_kept(grid, fraction) if fraction > 0 else grid
    frame = torch.from_numpy(np.ascontiguousarray(stacked[..., :kept, :]))
    return F.interpolate(frame, size=(size, size), mode="nearest") > 0.5


def region_shares(drops: np.ndarray, masks: torch.Tensor) -> dict[str, Any]:
    """Where the synthetic score comes from: per image the positive parts of the score drops (N, R) that
    occluding each region caused, as shares of their sum, averaged over the images with any positive drop
    (the others are counted apart). ``area``: the mean share of the input each region covers."""
    positive = np.maximum(np.asarray(drops, np.float64), 0.0)
    totals = positive.sum(axis=1)
    with_mass = totals > 0
    shares: dict[str, Any] = {
        name: float((positive[with_mass, r] / totals[with_mass]).mean()) if with_mass.any() else None
        for r, name in enumerate(REGIONS)
    }
    area = masks.float().mean(dim=(0, 2, 3)).numpy()
    shares["area"] = {name: float(area[r]) for r, name in enumerate(REGIONS)}
    shares["n_images"] = int(with_mass.sum())
    shares["n_images_without_a_drop"] = int((~with_mass).sum())
    return shares


def describe_regions(regions: RegionSettings) -> dict[str, Any]:
    return {
        "frame": (
            f"the audited image as read (after its data config's crop), on a {regions.grid} x {regions.grid} "
            "grid; maps of cropped images are placed on the rows the crop kept"
        ),
        "bottom_band": f"the bottom {regions.bottom_band:g} of the rows (rows_kept rounding: the paper's crop)",
        "top_band": f"the top {regions.top_band:g} of the rows",
        "borders": f"the outer {regions.borders:g} of the columns on each side, between the bands",
        "lungs": (
            "approximated per image: the largest dark connected regions (blurred image below a threshold "
            "between the Otsu threshold and the 2nd percentile) inside the box between the bands and the "
            "borders that reach neither the box's left nor its right side"
        ),
        "other": "the rest of the box between the bands and the borders (mediastinum, body, diaphragm)",
        "bottom_band_fraction": regions.bottom_band,
    }


# ------------------------------------------------------------------------------------------- measurement
@dataclass
class RealismResult:
    result: dict[str, Any]
    scores: pd.DataFrame  # per image: set, path, group, fold and each detector's score at each crop
    shown: list[tuple[np.ndarray, np.ndarray, str]]  # the most synthetic audited images, their CAMs, captions


def realism_against(
    audited_images: torch.Tensor,
    audited_table: pd.DataFrame,
    reference_images: torch.Tensor,
    reference_table: pd.DataFrame,
    settings: RealismSettings,
    seed: int,
    desc: str = "realism",
) -> RealismResult:
    """The measurement against one reference sample (images (N, 1, H, W) in [0, 1], tables with ``path``,
    ``label``, ``patient`` and the audited set's group column)."""
    n_a, n_r = len(audited_images), len(reference_images)
    y = np.r_[np.ones(n_a), np.zeros(n_r)].astype(int)
    a_groups, group_column = audited_groups(audited_table, settings.group_by)
    groups = np.r_[[f"audited:{g}" for g in a_groups], [f"reference:{p}" for p in reference_table["patient"]]]
    grid = settings.regions.grid
    small = F.adaptive_avg_pool2d(audited_images.float(), grid)[:, 0].numpy()
    masks = [region_masks(image, settings.regions) for image in small]
    frame = pd.DataFrame(
        {
            "set": ["audited"] * n_a + ["reference"] * n_r,
            PATH_COLUMN: list(audited_table[PATH_COLUMN].astype(str))
            + list(reference_table[PATH_COLUMN].astype(str)),
            "group": groups,
        }
    )
    entries: dict[str, dict[str, Any]] = {name: {"by_crop": []} for name in settings.detectors}
    reference_statistics = None  # of the reference films: once when they stay whole, else per crop
    shown_inputs: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None = None
    for crop_number, fraction in enumerate(settings.crop_fractions):
        # the statistics see the kept rows as decoded (no resampling: it would change the noise spectrum
        # of one set only); the CNN sees them stretched to its input, as a classifier would
        audited = cut_bottom(audited_images, fraction)
        reference = cut_bottom(reference_images, fraction) if settings.crop_reference else reference_images
        if "statistics" in settings.detectors:
            if reference_statistics is None or settings.crop_reference:
                reference_statistics = image_statistics(
                    reference, settings.statistics.histogram_bins, settings.statistics.spectrum_bands
                )
            entry, scores = _statistics_detector(audited, reference_statistics, y, groups, settings, seed)
            entry = {"crop_fraction": float(fraction), **entry}
            entries["statistics"]["by_crop"].append(entry)
            frame[f"statistics_{fraction:g}"] = scores
        if "cnn" in settings.detectors:
            size = settings.cnn.image_size
            inputs = torch.cat([stretch(audited, size), stretch(reference, size)])
            regions = input_masks(masks, fraction, size)
            entry, scores, drops, fold_of = _cnn_detector(
                inputs, regions, y, groups, settings, seed + 1000 * crop_number, f"{desc}, crop {fraction:g}"
            )
            entry = {
                "crop_fraction": float(fraction),
                **entry,
                "saliency_share": region_shares(drops, regions),
            }
            entries["cnn"]["by_crop"].append(entry)
            frame[f"cnn_{fraction:g}"] = scores
            frame[f"cnn_fold_{fraction:g}"] = fold_of
            if crop_number == 0:
                shown_inputs = (inputs[:n_a, 0], regions, drops)
    result: dict[str, Any] = {
        "n_audited": n_a,
        "n_reference": n_r,
        "groups": (
            f"audited: {group_column} ({len(set(a_groups))} groups); reference: patient "
            f"({reference_table['patient'].nunique()} patients)"
        ),
        "folds": settings.folds,
        "crop_reference": settings.crop_reference,
        "crop_fractions": [float(f) for f in settings.crop_fractions],
        "regions": describe_regions(settings.regions),
    }
    for name, entry in entries.items():
        first = entry["by_crop"][0]
        result[name] = {
            "detector": _describe(name, settings),
            "auroc": first["auroc"],
            "auroc_ci": first["auroc_ci"],
            "method": first["method"],
            "distinguishable": first["distinguishable"],
            "saliency_share": first.get("saliency_share"),
            **({"by_feature_group": first["by_feature_group"]} if "by_feature_group" in first else {}),
            "by_crop": entry["by_crop"],
        }
        for item in entry["by_crop"]:
            item.pop("method")
    if "cnn" not in settings.detectors:
        result["statistics"]["saliency_share"] = None
    ranking = frame[f"{settings.detectors[0]}_{settings.crop_fractions[0]:g}"].to_numpy()[:n_a]
    order = np.argsort(-ranking, kind="mergesort")[: settings.n_show]
    shown = []
    for i in order:
        if shown_inputs is None:
            image, overlay = torch.from_numpy(small[i]), np.zeros_like(small[i])
        else:
            image = shown_inputs[0][i]
            overlay = occlusion_map(shown_inputs[1][i], shown_inputs[2][i])
        shown.append(
            (image.numpy(), overlay, f"{audited_table[PATH_COLUMN].iloc[i]}\nscore {ranking[i]:.2f}")
        )
    return RealismResult(result, frame, shown)


def _auroc_entry(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, settings: RealismSettings, seed: int):
    stats = out_of_fold_auroc(y, scores, groups, settings.n_resamples, seed, settings.alpha)
    return {**stats, "distinguishable": bool(stats["auroc_ci"][0] > 0.5)}


def _statistics_detector(
    audited: torch.Tensor,
    reference: dict[str, np.ndarray],  # the reference films' ``image_statistics``
    y: np.ndarray,
    groups: np.ndarray,
    settings: RealismSettings,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    s = settings.statistics
    parts = [image_statistics(audited, s.histogram_bins, s.spectrum_bands), reference]
    features = {name: np.concatenate([part[name] for part in parts]) for name in FEATURE_GROUPS}
    combined = np.concatenate([features[name] for name in FEATURE_GROUPS], axis=1)
    scores, _ = out_of_fold(y, groups, settings.folds, seed, _logistic_fit_predict(combined, y, s.C))
    entry = _auroc_entry(y, scores, groups, settings, seed)
    entry["by_feature_group"] = {}
    for name in FEATURE_GROUPS:
        alone, _ = out_of_fold(y, groups, settings.folds, seed, _logistic_fit_predict(features[name], y, s.C))
        item = _auroc_entry(y, alone, groups, settings, seed)
        entry["by_feature_group"][name] = {"auroc": item["auroc"], "auroc_ci": item["auroc_ci"]}
    return entry, scores


def _cnn_detector(
    inputs: torch.Tensor,
    regions: torch.Tensor,
    y: np.ndarray,
    groups: np.ndarray,
    settings: RealismSettings,
    seed: int,
    desc: str,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold scores and, per audited image (they come first in ``inputs``), the drop of its score when
    each region (``regions``, (N_audited, R, S, S)) is replaced by the mean reference film of the training
    folds: how much of its "synthetic" score that region carries."""
    c = settings.cnn
    drops = np.zeros((int(y.sum()), len(REGIONS)))
    bar = tqdm(total=settings.folds, desc=f"{desc}: cnn folds", unit="fold", leave=False)

    def fit_predict(train: np.ndarray, test: np.ndarray, fold: int) -> np.ndarray:
        detector = train_detector(inputs[train], y[train], c, seed * 100 + fold)
        scores = detector_scores(detector, inputs[test])
        audited_rows = test[y[test] == 1]
        if len(audited_rows):
            real = inputs[train][y[train] == 0].mean(dim=0)
            base = scores[y[test] == 1]
            for r in range(len(REGIONS)):
                present = regions[audited_rows, r].flatten(1).any(dim=1).numpy()  # a cut band is absent
                if not present.any():
                    continue
                rows = audited_rows[present]
                occluded = torch.where(regions[rows, r : r + 1], real, inputs[rows])
                drops[rows, r] = base[present] - detector_scores(detector, occluded)
        bar.update()
        return scores

    with bar:
        scores, fold_of = out_of_fold(y, groups, settings.folds, seed, fit_predict)
    return _auroc_entry(y, scores, groups, settings, seed), scores, drops, fold_of


@torch.inference_mode()
def detector_scores(detector: _Detector, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The detector's logits (synthetic) in eval mode."""
    return torch.cat(
        [detector(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    ).numpy()


def occlusion_map(regions: torch.Tensor, drops: np.ndarray) -> np.ndarray:
    """For the figure: each pixel of one image (regions (R, S, S)) gets its region's share of the positive
    score drops, spread over the region's area (so the map sums to 1; zero without any positive drop)."""
    positive = np.maximum(drops, 0.0)
    if positive.sum() <= 0:
        return np.zeros(regions.shape[-2:], np.float32)
    area = regions.float().sum(dim=(1, 2)).clamp_min(1).numpy()
    weights = torch.from_numpy((positive / positive.sum() / area).astype(np.float32))
    return (regions.float() * weights[:, None, None]).sum(dim=0).numpy()


def _describe(name: str, settings: RealismSettings) -> str:
    if name == "cnn":
        c = settings.cnn
        return (
            f"{c.backbone} from scratch at {c.image_size} px, {c.epochs} epochs, AdamW one-cycle max lr {c.lr:g}, batch "
            f"{c.batch_size}; where it looks: score drop when each region is replaced by the mean real film"
        )
    s = settings.statistics
    return (
        f"logistic regression (standardised features, C {s.C:g}) on a {s.histogram_bins}-bin intensity "
        f"histogram, the power spectrum in {s.spectrum_bands} radial bands (log10) and edge density (mean "
        f"Sobel magnitude, share above {', '.join(f'{t:g}' for t in EDGE_THRESHOLDS)})"
    )


# ------------------------------------------------------------------------------------------------ figure
def realism_figure(
    result: dict[str, Any], shown: list[tuple[np.ndarray, np.ndarray, str]], title: str
) -> Figure:
    """AUROC by crop fraction (each detector, with its interval), the CNN's saliency shares by crop, and the
    most synthetic audited images with their occlusion map (first crop), the bottom band dashed."""
    columns = max(4, len(shown))
    band = float(result["regions"]["bottom_band_fraction"])
    figure = Figure(figsize=(2.0 * columns, 6.4), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.1, 1.0])
    left, right = top.subplots(1, 2)
    for name in DETECTORS:
        if name not in result:
            continue
        crops = [item["crop_fraction"] for item in result[name]["by_crop"]]
        values = np.array([item["auroc"] for item in result[name]["by_crop"]])
        intervals = np.array([item["auroc_ci"] for item in result[name]["by_crop"]])
        left.errorbar(
            crops,
            values,
            yerr=[values - intervals[:, 0], intervals[:, 1] - values],
            marker="o",
            capsize=3,
            label=name,
        )
    left.axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
    left.set_ylim(0.3, 1.02)
    left.set_xlabel("bottom crop fraction of the audited images")
    left.set_ylabel("out-of-fold AUROC, synthetic vs real")
    left.legend(fontsize=7)
    if "cnn" in result:
        crops = [item["crop_fraction"] for item in result["cnn"]["by_crop"]]
        base = np.zeros(len(crops))
        for name in REGIONS:
            share = np.array([item["saliency_share"][name] or 0.0 for item in result["cnn"]["by_crop"]])
            right.bar([f"{c:g}" for c in crops], share, bottom=base, label=name.replace("_", " "))
            base += share
        right.set_xlabel("bottom crop fraction")
        right.set_ylabel("share of the CNN's score drop by region")
        right.legend(fontsize=7, loc="upper right")
    axes = np.atleast_1d(bottom.subplots(1, columns))
    for ax in axes:
        ax.set_axis_off()
    for ax, (image, cam, caption) in zip(axes, shown, strict=False):
        grid = image.shape[0]
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        if cam.max() > 0:
            ax.imshow(cam, cmap="jet", alpha=0.35, vmin=0, vmax=float(cam.max()))
        ax.axhline(rows_kept(grid, band) - 0.5, color="white", linestyle="--", linewidth=0.7)
        ax.set_title(caption, fontsize=6)
    bottom.suptitle(
        "most synthetic audited images (first crop, as the CNN sees them); overlay: score drop per region",
        fontsize=8,
    )
    figure.suptitle(title, fontsize=9)
    return figure


# ---------------------------------------------------------------------------------------- the audit part
def realism_part(
    audited: ImageSet,
    images: torch.Tensor,
    references: Sequence[ImageSet],
    settings: RealismSettings,
    seed: int,
    workers: Any = None,
) -> tuple[dict[str, Any], dict[str, Figure], dict[str, pd.DataFrame]]:
    """The measurement against every reference set: results by reference name, a figure and a table of
    per-image scores (``realism_<name>``) each."""
    results: dict[str, Any] = {}
    figures: dict[str, Figure] = {}
    tables: dict[str, pd.DataFrame] = {}
    for ref in references:
        rows = reference_sample(ref.labels, audited.labels, settings.reference_n, seed)
        reference_images = torch.cat(
            [pixels for _, pixels in decode_rows(ref, rows, workers, f"realism: {ref.name} sample")]
        )
        outcome = realism_against(
            images,
            audited.table,
            reference_images,
            ref.table.iloc[rows].reset_index(drop=True),
            settings,
            seed,
            desc=f"realism vs {ref.name}",
        )
        outcome.result["reference_sample"] = (
            f"{len(rows)} of {len(ref.table)} {ref.name} images, drawn without replacement with the audited "
            f"set's class balance (seed {seed})"
        )
        outcome.result["scores"] = f"realism_{ref.name}.csv"
        results[ref.name] = outcome.result
        tables[f"realism_{ref.name}"] = outcome.scores
        figures[f"realism_{ref.name}"] = realism_figure(
            outcome.result, outcome.shown, f"realism: {audited.name} vs {ref.name}"
        )
    return results, figures, tables
