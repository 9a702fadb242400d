"""Grad-CAM for the pneumonia classifier: where in the image lies the evidence for a prediction?

The paper crops the bottom 30 % of synthetic images (where generators put text and markers). The share of
a map's mass in that band says how much of a decision rests on pixels the crop would remove. Maps come from
``pytorch_grad_cam`` (Selvaraju et al. 2017) at the last convolutional stage, the map the head pools.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import save_figure
from cxrsyn.core.manifest import LABEL_COLUMN
from cxrsyn.core.paths import check_name, inside
from cxrsyn.data.transforms import rows_kept, source_band_weights
from cxrsyn.evaluation.outputs import PROB_COLUMN

Target = Literal["predicted", "pneumonia", "normal"]
TARGETS: tuple[str, ...] = ("predicted", "pneumonia", "normal")
CELLS: tuple[str, ...] = ("TP", "FP", "FN", "TN")
SAVED_CAM_SIZE = 64  # side of the maps kept in <name>_cams.npz


# ------------------------------------------------------------------------------------------ target layer
def _family_layer(net: torch.nn.Module, family: str) -> torch.nn.Module | None:
    """The layer whose output the classifier head pools, for the timm families we know; else None.

    Each is the last spatial map before global pooling, after its normalisation and activation: with a
    linear head Grad-CAM there equals the class activation map of Zhou et al. (2016), whose spatial mean plus
    the bias is the logit itself (convnext's head normalises the pooled vector first: nearly so). Hence densenet's ``features.norm5`` (BatchNorm + ReLU on the last dense
    block's concatenated features) rather than ``denseblock4``, and efficientnet's ``bn2`` (BatchNorm + SiLU
    after ``conv_head``) rather than ``conv_head``, whose map still passes a per-channel affine and SiLU.
    """
    try:
        if family.startswith(("resnet", "resnext", "wide_resnet", "seresnext")):
            return net.layer4[-1]
        if family.startswith("densenet"):
            return net.features.norm5
        if family.startswith(("efficientnet", "tf_efficientnet")):
            return net.bn2
        if family.startswith("convnext"):
            return net.stages[-1]
    except (AttributeError, IndexError, TypeError):  # a name in a family but another architecture
        return None
    return None


def target_layer(net: torch.nn.Module, backbone: str, override: str | None = None) -> torch.nn.Module:
    """The module of ``net`` (a timm model named ``backbone``) whose activations Grad-CAM weighs.

    ``override``: a dotted module path (``"layer3.1"``), taking precedence over the family default.
    """
    names = [name for name, _ in net.named_modules() if name]
    if override:
        try:
            return net.get_submodule(override)
        except AttributeError:
            close = difflib.get_close_matches(override, names, n=3, cutoff=0.5)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else f"top-level modules: {', '.join(dict(net.named_children()))}"
            )
            raise CxrsynError(
                f"gradcam.target_layer={override!r} is not a module of backbone {backbone!r}; {hint}"
            ) from None
    family = backbone.split(".")[0].removeprefix("test_")
    layer = _family_layer(net, family)
    if layer is None:
        convs = [name for name, module in net.named_modules() if isinstance(module, torch.nn.Conv2d)]
        raise CxrsynError(
            f"no Grad-CAM target layer known for backbone {backbone!r}; set gradcam.target_layer=<module path>, "
            f"e.g. one of: {', '.join((convs or names)[-3:])}"
        )
    return layer


_target_layer = target_layer  # gradcam_for_test_set has a parameter of this name


def module_path(net: torch.nn.Module, layer: torch.nn.Module) -> str:
    """The dotted name of ``layer`` inside ``net``."""
    for name, module in net.named_modules():
        if module is layer:
            return name
    raise ValueError("the target layer is not a module of the network")


# ------------------------------------------------------------------------------------------------ maps
class _PredictedClassTarget:
    """The logit where the image is predicted pneumonia (sigmoid >= threshold), else the negated logit."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, logit: torch.Tensor) -> torch.Tensor:
        # float32 sigmoid compared in float64, as the predictions table holds it
        positive = float(torch.sigmoid(logit.detach().float())) >= self.threshold
        return BinaryClassifierOutputTarget(int(positive))(logit)


class _ZeroAnchoredGradCAM(GradCAM):
    """GradCAM whose maps keep 0 as "no evidence for the target".

    The library rescales every map from [min, max] to [0, 1]; subtracting the minimum moves mass between
    rows and would make the bottom-band share depend on the weakest region. Here a map is ReLU'd, upsampled
    bilinearly to the input size and divided by its maximum; an all-zero map stays all zero.
    """

    def compute_cam_per_layer(
        self, input_tensor: torch.Tensor, targets: list, eigen_smooth: bool
    ) -> list[np.ndarray]:
        activations = self.activations_and_grads.activations
        gradients = self.activations_and_grads.gradients
        if not activations or not gradients:
            raise CxrsynError(
                "the Grad-CAM target layer saw no activations or gradients in the forward pass; "
                "set gradcam.target_layer to a module the logit depends on"
            )
        maps = []
        for layer, activation, gradient in zip(self.target_layers, activations, gradients, strict=False):
            cam = self.get_cam_image(
                input_tensor,
                layer,
                targets,
                activation.detach().cpu().numpy(),
                gradient.detach().cpu().numpy(),
                eigen_smooth,
            )
            maps.append(_resize(np.maximum(cam, 0), tuple(input_tensor.shape[-2:])))
        return maps

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        cams = np.mean(np.stack(cam_per_target_layer), axis=0)
        peak = cams.max(axis=(1, 2), keepdims=True)
        return np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps resized bilinearly (antialiased when shrinking) to (N, *size), float32, still >= 0."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[:, 0].clamp_(min=0).numpy()


def compute_cams(
    model: torch.nn.Module,
    images: torch.Tensor,
    layer: torch.nn.Module,
    target: Target = "predicted",
    threshold: float = 0.5,
) -> np.ndarray:
    """Grad-CAM maps, (N, H, W) float32 in [0, 1] at the images' resolution, each divided by its maximum.

    ``model`` maps images (N, 1, H, W) in [0, 1] to logits (N,), like ``PneumoniaClassifier``; ``layer`` is a
    module inside it. ``target``: the class whose evidence is mapped: ``"pneumonia"`` differentiates the
    logit, ``"normal"`` the negated logit, ``"predicted"`` (the usual Grad-CAM choice) whichever of the two
    the model predicts at ``threshold``. Runs in eval mode; train/eval flags, ``requires_grad`` and ``.grad``
    of every parameter are restored afterwards.
    """
    if target not in TARGETS:
        raise CxrsynError(f"gradcam.target={target!r} is unknown; use one of {', '.join(TARGETS)}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    fixed = {"pneumonia": BinaryClassifierOutputTarget(1), "normal": BinaryClassifierOutputTarget(0)}
    score = fixed.get(target) or _PredictedClassTarget(threshold)
    modes = {module: module.training for module in model.modules()}
    parameters = {parameter: (parameter.requires_grad, parameter.grad) for parameter in model.parameters()}
    device = next(iter(parameters)).device
    inputs = images.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    cam = _ZeroAnchoredGradCAM(model, [layer])  # sets eval mode
    try:
        # gradients flow to the layer through the input alone: no parameter gradient is computed or kept
        for parameter in parameters:
            parameter.requires_grad_(False)
        with torch.enable_grad():
            return cam(inputs, targets=[score] * len(inputs))
    finally:
        cam.activations_and_grads.release()
        for parameter, (requires_grad, grad) in parameters.items():
            parameter.requires_grad_(requires_grad)
            parameter.grad = grad
        for module, training in modes.items():
            module.training = training


def bottom_band_share(
    cams: np.ndarray, fraction: float, geometry: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
) -> np.ndarray:
    """Per map, the share of its mass on the bottom ``fraction`` of the stored image: the rows ``crop_bottom``
    removes, with the same rounding. ``geometry`` gives per map the ``(content, band)`` weights of
    ``cxrsyn.data.transforms.source_band_weights`` (padding excluded, band measured in the stored image's
    rows); without it, every pixel of the map is content and the band is its own bottom rows. NaN for a map
    with no mass on the image (no evidence anywhere), for callers to count apart rather than read as 0."""
    if not 0.0 <= fraction < 1.0:
        raise CxrsynError(f"gradcam.band_fraction={fraction} must lie in [0, 1); the paper's crop is 0.3")
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (N, H, W), got shape {cams.shape}")
    if np.isnan(cams).any() or (cams < 0).any():
        raise ValueError("cams must be non-negative and free of NaN")
    if geometry is None:
        content = np.ones(cams.shape[1:])
        band = np.zeros(cams.shape[1:])
        band[rows_kept(cams.shape[1], fraction) :] = 1.0
        geometry = [(content, band)] * len(cams)
    if len(geometry) != len(cams):
        raise ValueError(f"{len(geometry)} geometries for {len(cams)} maps")
    on_image = np.array([(cam * content).sum() for cam, (content, _) in zip(cams, geometry, strict=True)])
    in_band = np.array(
        [(cam * content * band).sum() for cam, (content, band) in zip(cams, geometry, strict=True)]
    )
    return np.divide(in_band, on_image, out=np.full(len(cams), np.nan), where=on_image > 0)


def confusion_cells(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Row indices of the TP, FP, FN and TN cells (pneumonia predicted at prob >= threshold, as in
    ``metrics``), each most confident first: predicted positives (TP, FP) by descending prob, predicted
    negatives (FN, TN) by ascending prob, so the first errors shown are the most confident ones. Ties keep
    row order."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and probs {probs.shape} must be 1-d of the same length")
    predicted = probs >= threshold
    masks = {
        "TP": predicted & (labels == 1),
        "FP": predicted & (labels == 0),
        "FN": ~predicted & (labels == 1),
        "TN": ~predicted & (labels == 0),
    }
    cells = {}
    for cell, mask in masks.items():
        rows = np.flatnonzero(mask)
        confidence = -probs[rows] if cell in ("TP", "FP") else probs[rows]
        cells[cell] = rows[np.argsort(confidence, kind="stable")]
    return cells


# ------------------------------------------------------------------------------------------ test set
def _images(dataset: Any, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray | None]:
    """The items' images, and their stored (height, width) when every item carries ``source_size``."""
    items = [dataset[int(i)] for i in indices]
    for i, item in zip(indices, items, strict=True):
        if "index" in item and int(item["index"]) != int(i):
            raise RuntimeError(
                f"test set item {i} carries index {item['index']}; rows must follow item order"
            )
    sizes = None
    if all("source_size" in item for item in items):
        sizes = np.stack([np.asarray(item["source_size"]) for item in items])
    return torch.stack([item["image"] for item in items]), sizes


def _summary(shares: np.ndarray) -> dict[str, Any]:
    defined = shares[~np.isnan(shares)]
    return {
        "mean": float(defined.mean()) if defined.size else None,
        "median": float(np.median(defined)) if defined.size else None,
        "n": int(shares.size),
        "n_zero_cam": int(shares.size - defined.size),
    }


def _grid_figure(
    images: dict[int, np.ndarray],
    cams: dict[int, np.ndarray],
    rows: Sequence[tuple[str, np.ndarray]],
    probs: np.ndarray,
    band_starts: dict[int, int | None],
    columns: int,
    title: str,
) -> Figure:
    """One row of tiles per ``(label, indices)`` in ``rows``; each tile the image with its map overlaid and
    the top of the bottom band (in the stored image's rows) dashed."""
    figure = Figure(figsize=(2.0 * columns + 0.8, 2.1 * len(rows) + 0.7), layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, (label, indices) in enumerate(rows):
        for column, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(label, fontsize=11)
            if column >= len(indices):
                if column == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
                else:
                    ax.set_visible(False)
                continue
            index = int(indices[column])
            image = images[index]
            height, width = image.shape
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            ax.imshow(cams[index], cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0, extent=extent)
            if band_starts.get(index) is not None:
                ax.axhline(band_starts[index] - 0.5, color="white", linestyle="--", linewidth=0.8)
            ax.set_title(f"#{index} p={probs[index]:.3f}", fontsize=9)
    figure.suptitle(title, fontsize=10)
    return figure


def grid_rows(
    cells: dict[str, np.ndarray], labels: np.ndarray, probs: np.ndarray, n_per_cell: int
) -> tuple[list[tuple[str, np.ndarray]], bool]:
    """The grid's rows: TP, FP, FN, TN (most confident first) or, when the threshold leaves the predicted
    positives (TP and FP) or the predicted negatives (FN and TN) empty, ranked rows instead: the most and
    the least pneumonia-like images of each class. Returns the rows and whether they are ranked."""
    if (len(cells["TP"]) or len(cells["FP"])) and (len(cells["FN"]) or len(cells["TN"])):
        return [(cell, cells[cell][:n_per_cell]) for cell in CELLS], False
    ranked = []
    for label, name in ((1, "pneumonia"), (0, "normal")):
        members = np.flatnonzero(labels == label)
        by_prob = members[np.argsort(-probs[members], kind="stable")]
        ranked.append((f"{name}\nhighest p", by_prob[:n_per_cell]))
        ranked.append((f"{name}\nlowest p", by_prob[::-1][:n_per_cell]))
    return ranked, True


def gradcam_for_test_set(
    model: torch.nn.Module,
    dataset: Any,
    table: pd.DataFrame,
    threshold: float,
    out_dir: str | os.PathLike,
    name: str,
    n_per_cell: int = 8,
    band_fraction: float = 0.3,
    target_layer: str | None = None,
    batch_size: int = 16,
    n_share: int = 200,
    seed: int = 0,
    target: Target = "predicted",
    input_geometry: tuple[int, str, float] | None = None,
) -> dict[str, Any]:
    """Grad-CAM of one test set: a grid figure, the maps it shows, and the bottom-band share of CAM mass.

    ``model`` is a ``PneumoniaClassifier`` (``model.net``, ``model.hparams.backbone``); ``dataset`` yields
    ``{"image": (1, H, W) in [0, 1], "source_size": (height, width), ...}``; ``table`` is its predictions
    table (``label``, ``prob``), row i for item i. ``input_geometry`` = (image_size, resize policy, crop
    fraction) of the test set: with it (and ``source_size`` in the items) the band is measured in the stored
    image's rows and padding is left out (``cxrsyn.data.transforms.source_band_weights``); without it, in
    the input's rows. Writes ``<name>_grid.png`` (up to ``n_per_cell`` most confident images of each
    confusion cell, or ranked rows when the threshold leaves a side empty: see ``grid_rows``) and
    ``<name>_cams.npz`` (the grid's ``indices``, ``cells``, ``cams`` as float16 64x64, ``probs``,
    ``labels``; the sampled ``share_indices`` and their ``shares``) in ``out_dir``.

    The share is measured on a random sample (``seed``) of ``n_share`` images (all if fewer): ``n`` counts
    the sample, ``n_zero_cam`` its all-zero maps, which mean and median leave out. ``by_cell`` splits the
    same sample by confusion cell. Returns a JSON-safe dict; file names are relative to ``out_dir``.
    """
    if len(table) != len(dataset):
        raise CxrsynError(
            f"the predictions table for {name!r} has {len(table)} rows but the test set {len(dataset)} items; "
            f"pass predictions/{name}.csv of this test set"
        )
    if not 0.0 <= band_fraction < 1.0:
        raise CxrsynError(
            f"gradcam.band_fraction={band_fraction} must lie in [0, 1); the paper's crop is 0.3"
        )
    labels = table[LABEL_COLUMN].to_numpy().astype(int)
    probs = table[PROB_COLUMN].to_numpy(dtype=np.float64)
    cells = confusion_cells(labels, probs, threshold)
    rows_of_grid, ranked = grid_rows(cells, labels, probs, n_per_cell)
    grid_indices = np.concatenate([indices for _, indices in rows_of_grid]).astype(np.int64)
    rng = np.random.default_rng(seed)
    share_rows = np.sort(rng.choice(len(table), size=min(n_share, len(table)), replace=False)).astype(
        np.int64
    )

    net = model.net
    layer = _target_layer(net, model.hparams.backbone, target_layer)
    todo = np.union1d(grid_indices, share_rows).astype(np.int64)
    wanted_for_grid = set(grid_indices.tolist())
    small_cams: dict[int, np.ndarray] = {}
    grid_images: dict[int, np.ndarray] = {}
    band_starts: dict[int, int | None] = {}
    share_of: dict[int, float] = {}
    batches = range(0, len(todo), batch_size)
    for start in tqdm(batches, desc=f"grad-cam {name}", unit="batch", disable=len(batches) < 2):
        rows = todo[start : start + batch_size]
        images, sizes = _images(dataset, rows)
        cams = compute_cams(model, images, layer, target=target, threshold=threshold)
        geometry = None
        if input_geometry is not None and sizes is not None:
            size, policy, crop = input_geometry
            geometry = [
                source_band_weights(int(h), int(w), float(crop), band_fraction, int(size), policy)
                for h, w in sizes.tolist()
            ]
        share_of.update(
            zip(rows.tolist(), bottom_band_share(cams, band_fraction, geometry).tolist(), strict=True)
        )
        small = _resize(cams, (SAVED_CAM_SIZE, SAVED_CAM_SIZE)).clip(0.0, 1.0)
        for position, row in enumerate(rows.tolist()):
            if row in wanted_for_grid:
                small_cams[row] = small[position]
                grid_images[row] = images[position, 0].float().cpu().numpy()
                if geometry is None:
                    band_starts[row] = rows_kept(images.shape[-2], band_fraction)
                else:
                    in_band = np.flatnonzero(geometry[position][1].max(axis=1) > 0)
                    band_starts[row] = int(in_band[0]) if in_band.size else None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layer_path = module_path(net, layer)
    grid_name = f"{check_name(name, 'test set name ')}_grid.png"
    cams_name = f"{name}_cams.npz"
    title = f"{name}: Grad-CAM of the {target} class at {layer_path}; threshold {threshold:.3g}\n"
    if ranked:
        side = "positive" if not (len(cells["TP"]) or len(cells["FP"])) else "negative"
        title += f"the threshold predicts no image {side}: rows ranked by p within each class instead of TP/FP/FN/TN; "
    title += f"dashed: top of the bottom {band_fraction:.0%} of the stored image"
    figure = _grid_figure(
        grid_images, small_cams, rows_of_grid, probs, band_starts, max(1, n_per_cell), title
    )
    save_figure(figure, inside(out_dir, grid_name), dpi=100)
    shares = np.array([share_of[row] for row in share_rows.tolist()], dtype=np.float64)
    np.savez_compressed(
        inside(out_dir, cams_name),
        indices=grid_indices,
        cells=np.array([label for label, indices in rows_of_grid for _ in indices], dtype="<U32"),
        cams=np.stack([small_cams[row] for row in grid_indices.tolist()]).astype(np.float16)
        if len(grid_indices)
        else np.zeros((0, SAVED_CAM_SIZE, SAVED_CAM_SIZE), np.float16),
        probs=probs[grid_indices],
        labels=labels[grid_indices],
        cell_names=np.array([label for label, _ in rows_of_grid]),
        share_indices=share_rows,
        shares=shares,
    )
    by_cell = {}
    for cell, rows in cells.items():
        cell_shares = shares[np.isin(share_rows, rows)]
        summary = _summary(cell_shares)
        by_cell[cell] = {"n": summary["n"], "mean_share": summary["mean"]}
    return {
        "target_layer": layer_path,
        "target": target,
        "band_fraction": float(band_fraction),
        "band_measured_in": "stored image rows, padding excluded" if input_geometry else "input rows",
        "bottom_band_share": _summary(shares),
        "by_cell": by_cell,
        "grid": grid_name,
        "grid_rows": "ranked by p within each class" if ranked else "TP, FP, FN, TN at the threshold",
        "cams": cams_name,
        "threshold": float(threshold),
    }
