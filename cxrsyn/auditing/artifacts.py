"""Part 4, class-linked artifacts: where in the frame do the classes differ, pixel by pixel?

Every audited image is resized to one ``grid`` x ``grid`` frame without padding (positions are fractions of
each image's own frame). The per-pixel mean image of each class and their difference give:

- ``bottom_band_share``: the share of the class-difference energy (squared difference) in the bottom
  ``band_fraction`` of rows (the rows the paper's crop removes, same rounding);
- per corner (``corner_fraction`` of each side), the same share;
- the strongest class-linked region: the connected set of pixels whose Welch t statistic exceeds the
  permutation threshold (the ``1 - alpha`` quantile of the largest |t| over label permutations), as a
  bounding box in fractions of the frame.

Flag rule, from label permutations (``n_permutations``, seeded): the band (or a corner) is flagged when its
share is larger than under ``1 - alpha / 5`` of the permutations (Bonferroni over the band and four corners),
or when a significant region (family-wise error ``alpha`` over all pixels) lies wholly inside it: the
classes differ there more than chance label assignments make them. A lesion inside the lungs puts the
difference elsewhere and leaves the band unflagged; a small class-linked mark is found by the t map even
when lesions hold most of the difference energy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy import ndimage

from cxrsyn.data.transforms import rows_kept

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class ArtifactsSettings:
    """The ``artifacts`` block of ``conf/audit.yaml`` (which says what each entry does); ``class_artifacts``
    takes it as a mapping (``dataclasses.asdict``)."""

    grid: int
    band_fraction: float
    corner_fraction: float
    n_permutations: int
    alpha: float
    enabled: bool = True


def _masks(grid: int, band_fraction: float, corner_fraction: float) -> dict[str, np.ndarray]:
    keep = rows_kept(grid, band_fraction)
    band = np.zeros((grid, grid), bool)
    band[keep:] = True
    side = max(1, int(round(corner_fraction * grid)))
    masks = {"bottom_band": band}
    for name in CORNERS:
        mask = np.zeros((grid, grid), bool)
        rows = slice(0, side) if name.startswith("top") else slice(grid - side, grid)
        cols = slice(0, side) if name.endswith("left") else slice(grid - side, grid)
        mask[rows, cols] = True
        masks[name] = mask
    return masks


def _class_stats(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean difference (pos - neg) and Welch t per pixel, for each row of ``labels`` (P, N) 0/1."""
    pos = labels.double()
    neg = 1.0 - pos
    n_pos, n_neg = pos.sum(1, keepdim=True), neg.sum(1, keepdim=True)
    mean_pos, mean_neg = pos @ x / n_pos, neg @ x / n_neg
    var_pos = (pos @ (x * x) / n_pos - mean_pos**2) * n_pos / (n_pos - 1).clamp_min(1)
    var_neg = (neg @ (x * x) / n_neg - mean_neg**2) * n_neg / (n_neg - 1).clamp_min(1)
    diff = mean_pos - mean_neg
    t = diff / (var_pos / n_pos + var_neg / n_neg).clamp_min(1e-12).sqrt()
    return diff, t


def class_artifacts(
    images: torch.Tensor, labels: np.ndarray, settings: Mapping[str, Any], seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Results for ``audit.json`` and the maps for the figure (class means, difference, t, region)."""
    grid = int(settings["grid"])
    band_fraction = float(settings["band_fraction"])
    alpha = float(settings["alpha"])
    small = F.adaptive_avg_pool2d(images.float(), grid) if images.shape[-1] != grid else images.float()
    x = small.reshape(len(small), -1).double()
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return {"skipped": "the audited set has one class only"}, {}
    rng = np.random.default_rng(seed)
    n_perm = int(settings["n_permutations"])
    permuted = np.stack([labels] + [rng.permutation(labels) for _ in range(n_perm)])
    diff, t = _class_stats(x, torch.from_numpy(permuted))
    energy = (diff**2).numpy()
    total = energy.sum(axis=1)
    masks = _masks(grid, band_fraction, float(settings["corner_fraction"]))
    tests = 1 + len(CORNERS)
    regions: dict[str, Any] = {}
    for name, mask in masks.items():
        shares = energy[:, mask.reshape(-1)].sum(axis=1) / np.maximum(total, 1e-300)
        p_value = float((1 + (shares[1:] >= shares[0]).sum()) / (n_perm + 1))
        regions[name] = {
            "share": float(shares[0]),
            "area_share": float(mask.mean()),
            "permutation_p": p_value,
            "flagged": bool(p_value < alpha / tests),
        }
    max_t = np.abs(t[1:].numpy()).max(axis=1)
    t_threshold = float(np.quantile(max_t, 1 - alpha))
    t_map = t[0].numpy().reshape(grid, grid)
    components, count = ndimage.label(np.abs(t_map) > t_threshold)
    found = []
    for number in range(1, count + 1):
        inside = components == number
        rows, cols = np.nonzero(inside)
        found.append(
            {
                "box": [
                    float(cols.min() / grid),
                    float(rows.min() / grid),
                    float((cols.max() + 1) / grid),
                    float((rows.max() + 1) / grid),
                ],
                "n_pixels": int(inside.sum()),
                "strength": float(np.abs(t_map[inside]).sum()),
                "sign": "brighter in pneumonia" if t_map[inside].mean() > 0 else "brighter in normal",
                "inside": [name for name, mask in masks.items() if mask[inside].all()],
            }
        )
    found.sort(key=lambda item: -item["strength"])
    for name, item in regions.items():
        item["significant_regions_inside"] = sum(name in region["inside"] for region in found)
        item["flagged"] = bool(
            item["permutation_p"] < alpha / tests or item["significant_regions_inside"] > 0
        )
    region = None
    if found:
        region = {
            **found[0],
            "box_format": "x0, y0, x1, y1 as fractions of the image (y down)",
            "inside_bottom_band": "bottom_band" in found[0]["inside"],
        }
    result = {
        "grid": grid,
        "band_fraction": band_fraction,
        "bottom_band_share": regions["bottom_band"]["share"],
        "bottom_band": regions["bottom_band"],
        "corners": {name: regions[name] for name in CORNERS},
        "strongest_region": region,
        "significant_regions": found[:20],
        "t_threshold": t_threshold,
        "flagged": [name for name, item in regions.items() if item["flagged"]],
        "rule": (
            f"the bottom band or a corner is flagged when its share of the class-difference energy exceeds that "
            f"under label permutations with p < {alpha:g}/{tests}, or when a significant region lies wholly "
            f"inside it; significant regions are connected sets of pixels whose Welch |t| exceeds the "
            f"{1 - alpha:g} quantile of the largest |t| under the permutations ({n_perm}, seed {seed}); "
            "the strongest has the largest sum of |t|"
        ),
    }
    images_np = small[:, 0].numpy()
    maps = {
        "mean_pneumonia": images_np[labels == 1].mean(axis=0),
        "mean_normal": images_np[labels == 0].mean(axis=0),
        "difference": diff[0].numpy().reshape(grid, grid),
        "t": t_map,
    }
    return result, maps


def artifacts_figure(maps: dict[str, np.ndarray], result: dict[str, Any], title: str) -> Figure:
    figure = Figure(figsize=(10, 2.9), layout="constrained")
    axes = figure.subplots(1, 4)
    grid = maps["difference"].shape[0]
    keep = rows_kept(grid, result["band_fraction"])
    limit = float(np.abs(maps["difference"]).max()) or 1.0
    panels = [
        ("mean pneumonia", maps["mean_pneumonia"], "gray", (0, 1)),
        ("mean normal", maps["mean_normal"], "gray", (0, 1)),
        ("difference (pneumonia - normal)", maps["difference"], "coolwarm", (-limit, limit)),
        ("Welch t", maps["t"], "coolwarm", (-np.abs(maps["t"]).max(), np.abs(maps["t"]).max())),
    ]
    for ax, (name, image, cmap, (low, high)) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap=cmap, vmin=low, vmax=high)
        ax.axhline(keep - 0.5, color="black", linestyle="--", linewidth=0.7)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    region = result.get("strongest_region")
    if region:
        x0, y0, x1, y1 = (v * grid - 0.5 for v in region["box"])
        from matplotlib.patches import Rectangle

        axes[3].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.2))
    figure.suptitle(title, fontsize=9)
    return figure
