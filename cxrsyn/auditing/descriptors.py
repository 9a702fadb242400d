"""Image descriptors for near-duplicate search, and exact nearest-neighbour search in chunks.

A correlation descriptor samples the central region of an image (``window``: the middle 70% of each side
by default, away from the borders a crop would remove) on a ``grid`` x ``grid`` lattice by area averaging
(blur enough that JPEG blocks and noise vanish), after the low frequencies every chest shares have been
removed (``highpass``), then makes it zero-mean and unit-norm: the dot product of two descriptors is their
Pearson correlation, unchanged by brightness and contrast, and a uniform resize changes nothing (windows
are fractions of the image).

A reference image has one descriptor. An audited image has one per *variant*: the window a reference's
central region would occupy in it, were it a copy of that reference with ``margins`` cropped from (or, for
a shift, added to) each side. ``refine`` then aligns a candidate pair precisely by moving the edges of the
audited image's window while the correlation of a finer descriptor grows.

Search is exact: chunked matrix products (torch) of every query variant against every reference, keeping the
top ``k``. At 300 audited images x 4,096 variants x 112,120 references x 256 dimensions that is about 3.5e13
multiply-adds: minutes on a GPU, hours on a CPU; an approximate index (faiss) would cut that but
could miss the near-copies this search exists to find. (Pruning by a low-rank bound on each image's
variants, exact too, was tried: on phantom films, which all correlate above 0.99, it kept most references.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchvision.ops import roi_align


@dataclass(frozen=True)
class CorrelationDescriptor:
    grid: int = 16
    window: float = 0.7  # the central share of each side that is compared
    margins: tuple[float, ...] = (-0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06, 0.08)
    sampling: int = 1  # samples per grid cell and side (the band-pass has already smoothed the image)
    highpass: float = 2.0  # sigma, in cells, of the blur subtracted first; 0 keeps every frequency
    lowpass: float = 0.5  # sigma, in cells, of the blur applied first (against aliasing, JPEG blocks, noise)
    size: int = 128  # images are area-downsampled to at most this side first (speed)

    def spans(self) -> np.ndarray:
        """(S, 2) spans (start, end) of one side's window, as fractions of the side, for each pair of margins
        (first, last) cut from that side; the first is the canonical span (no crop)."""
        low, high = (1 - self.window) / 2, (1 + self.window) / 2
        margins = sorted(set(self.margins), key=lambda m: (abs(m), m))
        return np.array(
            [
                ((low - a) / (1 - a - b), (high - a) / (1 - a - b))
                for a, b in itertools.product(margins, margins)
            ],
            dtype=np.float32,
        )

    def windows(self) -> np.ndarray:
        """(V, 4) variant windows (x0, y0, x1, y1) as fractions of the audited image, every vertical span with
        every horizontal one (variant ``y * S + x``); the first is the canonical window (no crop)."""
        spans = self.spans()
        return np.array([(x0, y0, x1, y1) for (y0, y1) in spans for (x0, x1) in spans], dtype=np.float32)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) images downsampled to ``size`` and band-passed: a Gaussian blur of ``lowpass`` cells
        minus one of ``highpass`` cells, so that the shape every chest shares weighs less than the detail that
        tells images apart. ``compute_boxes`` takes these."""
        images = images.float()
        if max(images.shape[-2:]) > self.size:
            scale = self.size / max(images.shape[-2:])
            shape = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
            images = F.interpolate(images, size=shape, mode="area")
        cell = self.window * (images.shape[-1] + images.shape[-2]) / 2 / self.grid
        smooth = _blur(images, self.lowpass * cell) if self.lowpass > 0 else images
        return smooth - _blur(images, self.highpass * cell) if self.highpass > 0 else smooth

    def canonical(self, images: torch.Tensor) -> torch.Tensor:
        """(N, grid*grid) descriptors of the canonical window: what a reference image is reduced to."""
        return self.compute(images, self.windows()[:1])[:, 0]

    def compute(self, images: torch.Tensor, windows: np.ndarray | None = None) -> torch.Tensor:
        """(N, V, grid*grid) descriptors of (N, 1, H, W) images in each window (default: every variant)."""
        if windows is None:
            return self.variants(self.prepare(images))
        boxes = torch.from_numpy(np.asarray(windows, dtype=np.float32))
        return self.compute_boxes(self.prepare(images), boxes.expand(len(images), -1, -1))

    def variants(self, prepared: torch.Tensor) -> torch.Tensor:
        """(N, V, grid*grid) descriptors of prepared images in every variant window: what ``compute_boxes``
        gives for ``windows()``, by two matrix products. With one sample per cell, a cell of ``roi_align`` is
        the bilinear interpolation of the image at one point, whose weights are a row weight times a column
        weight; so every window's grid is ``Y @ image @ X.T``, for the interpolation matrices Y (rows) and X
        (columns) of its two spans, and all spans at once cost two products per image (about 40 times fewer
        operations than sampling the 4,096 default windows one by one)."""
        if self.sampling != 1:
            windows = torch.from_numpy(self.windows())
            return self.compute_boxes(prepared, windows.expand(len(prepared), -1, -1))
        n, _, height, width = prepared.shape
        spans = self.spans()
        rows = torch.from_numpy(_interpolation(spans, height, self.grid))  # (S * grid, H)
        columns = torch.from_numpy(_interpolation(spans, width, self.grid))  # (S * grid, W)
        s, g = len(spans), self.grid
        across = (prepared[:, 0].float().reshape(n * height, width) @ columns.T).reshape(n, height, s * g)
        cells = rows @ across.permute(1, 0, 2).reshape(height, n * s * g)  # one product for every image
        flat = cells.reshape(s, g, n, s, g).permute(2, 0, 3, 1, 4).reshape(n, s * s, g * g)
        flat = flat.sub_(flat.mean(dim=-1, keepdim=True))
        return flat.div_(torch.linalg.vector_norm(flat, dim=-1, keepdim=True).clamp_min(1e-8))

    def compute_boxes(
        self, prepared: torch.Tensor, windows: torch.Tensor, image_index: np.ndarray | None = None
    ) -> torch.Tensor:
        """(P, V, grid*grid) descriptors of prepared images (N, 1, H, W) in windows (P, V, 4): row p of
        ``windows`` belongs to image ``image_index[p]`` (default: image p)."""
        _, _, height, width = prepared.shape
        n, v = windows.shape[:2]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes = windows.reshape(-1, 4).float() * scale  # pixel coordinates (aligned: pixel centres at +0.5)
        image_index = np.arange(n) if image_index is None else np.asarray(image_index)
        index = torch.from_numpy(image_index).float().repeat_interleave(v)[:, None]
        cells = roi_align(
            prepared,
            torch.cat([index, boxes], dim=1),
            output_size=self.grid,
            spatial_scale=1.0,
            sampling_ratio=self.sampling,
            aligned=True,
        )
        flat = cells.reshape(n, v, -1)
        flat = flat - flat.mean(dim=-1, keepdim=True)
        return flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _interpolation(spans: np.ndarray, length: int, grid: int) -> np.ndarray:
    """(S * grid, length) weights of ``roi_align``'s bilinear sampling (aligned, one sample per cell) along
    one axis of ``length`` pixels: row ``s * grid + i`` samples cell i of span s. As torchvision does: the
    sample sits at the cell's centre in pixel coordinates shifted by half a pixel; a sample more than a pixel
    outside the image is 0; one just outside is clamped to the edge."""
    start = spans[:, 0].astype(np.float64) * length - 0.5
    size = (spans[:, 1] - spans[:, 0]).astype(np.float64) * length / grid
    position = (start[:, None] + (np.arange(grid)[None] + 0.5) * size[:, None]).reshape(-1)
    weights = np.zeros((len(position), length), np.float32)
    for row, x in enumerate(position):
        if x < -1.0 or x > length:
            continue
        x = max(x, 0.0)
        low = int(x)
        if low >= length - 1:
            weights[row, length - 1] = 1.0
            continue
        weights[row, low] += 1.0 - (x - low)
        weights[row, low + 1] += x - low
    return weights


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, 1, H, W) images over H and W, borders reflected (scipy: separable, in C)."""
    blurred = ndimage.gaussian_filter(
        images.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0
    )
    return torch.from_numpy(blurred)


def nearest(
    queries: torch.Tensor,
    references: torch.Tensor,
    k: int = 1,
    exclude: np.ndarray | None = None,
    max_block: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` similarities (dot products) of each query against ``references``, in chunks of
    references (each similarity block at most ``max_block`` numbers). ``queries`` (Q, D) or (Q, V, D): with
    variants, a query's similarity to a reference is its best variant's. ``exclude`` (Q, R) bool marks pairs
    never to return (same patient, same image); missing neighbours come back as -inf with index -1."""
    if queries.ndim == 2:
        queries = queries[:, None]
    q, v, d = queries.shape
    chunk = max(1, max_block // max(1, q * v))
    flat = queries.reshape(q * v, d).float()
    best_sim = torch.full((q, k), -float("inf"))
    best_idx = torch.full((q, k), -1, dtype=torch.long)
    for start in range(0, len(references), chunk):
        block = references[start : start + chunk].float()
        sims = (flat @ block.T).reshape(q, v, -1).amax(dim=1)
        if exclude is not None:
            sims = sims.masked_fill(
                torch.from_numpy(np.asarray(exclude[:, start : start + chunk])), -float("inf")
            )
        both = torch.cat([best_sim, sims], dim=1)
        index = torch.cat([best_idx, torch.arange(start, start + block.shape[0]).expand(q, -1)], dim=1)
        top = both.topk(min(k, both.shape[1]), dim=1)
        best_sim, best_idx = top.values, index.gather(1, top.indices)
    best_idx[~torch.isfinite(best_sim)] = -1
    return best_sim.numpy(), best_idx.numpy()


def refine(
    descriptor: CorrelationDescriptor,
    prepared: torch.Tensor,
    query_rows: np.ndarray,
    references: torch.Tensor,
    windows: torch.Tensor,
    steps: Sequence[float] = (0.01, 0.005, 0.0025, 0.00125),
    moves: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Align pairs: query image ``query_rows[p]`` of ``prepared`` (``descriptor.prepare``) to reference
    descriptor ``references[p]``, moving the four edges of its window (start: ``windows[p]``) a step at a
    time while the correlation grows. Returns each pair's correlation and window."""
    current = windows.clone().float()
    best = _score(descriptor, prepared, query_rows, references, current[:, None])[:, 0]
    eye = torch.eye(4)
    for step in steps:
        deltas = torch.cat([eye * step, -eye * step])  # each edge moved out or in
        for _ in range(moves):
            candidates = current[:, None] + deltas[None]
            top, which = _score(descriptor, prepared, query_rows, references, candidates).max(dim=1)
            better = top > best
            if not better.any():
                break
            current[better] = candidates[better, which[better]]
            best = torch.where(better, top, best)
    return best, current


def _score(
    descriptor: CorrelationDescriptor,
    prepared: torch.Tensor,
    query_rows: np.ndarray,
    references: torch.Tensor,
    windows: torch.Tensor,
) -> torch.Tensor:
    """(P, C) correlations of query image ``query_rows[p]`` in window (p, c) with reference descriptor p."""
    return torch.einsum("pcd,pd->pc", descriptor.compute_boxes(prepared, windows, query_rows), references)
