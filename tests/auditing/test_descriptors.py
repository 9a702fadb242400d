"""Near-copy search: each perturbation alone, on real-like phantom films; exact search against brute force."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrsyn.auditing.contamination import pixel_matches
from cxrsyn.auditing.descriptors import CorrelationDescriptor, nearest
from cxrsyn.auditing.sets import Features
from cxrsyn.data.decode import Preprocessing, decode_resized
from tests.auditing.conftest import AUDIT_SIZE

COARSE = CorrelationDescriptor()
FINE = CorrelationDescriptor(grid=32, highpass=1.0, lowpass=0.5, margins=(0.0,))
N_COPIES = 8
K = 3


def _resize(image: Image.Image) -> Image.Image:
    return image.resize((int(image.width * 0.7), int(image.height * 0.75)), Image.BILINEAR)


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((int(0.05 * w), int(0.02 * h), w - int(0.03 * w), h - int(0.06 * h)))


def _shift(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image)
    dy, dx = int(0.03 * pixels.shape[0]), -int(0.04 * pixels.shape[1])
    shifted = np.zeros_like(pixels)  # the content moves; the border it leaves is black
    shifted[dy:, : pixels.shape[1] + dx] = pixels[: pixels.shape[0] - dy, -dx:]
    return Image.fromarray(shifted)


def _brightness_contrast(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * 0.75 + 40
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue()))


PERTURBATIONS = {
    "resize": _resize,
    "crop": _crop,
    "shift": _shift,
    "brightness_contrast": _brightness_contrast,
    "jpeg": _jpeg,
}


@pytest.fixture(scope="module")
def reference(reference_set):
    table = pd.read_csv(reference_set / "manifest.csv")
    prep = Preprocessing(AUDIT_SIZE, "stretch", 0.0, True)
    images = torch.stack(
        [torch.from_numpy(decode_resized(reference_set / p, prep))[None] for p in table["path"]]
    ).float()
    features = Features(
        COARSE.canonical(images).numpy(), FINE.canonical(images).numpy(), np.zeros((len(images), 1))
    )
    patients = table["path"].to_numpy()
    calibration = pixel_matches(images, features, COARSE, FINE, 3, patients, np.eye(len(images), dtype=bool))
    return {
        "table": table,
        "features": features,
        "patients": patients,
        "threshold": float(np.max(calibration.distinctiveness)),
        "root": reference_set,
    }


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_each_perturbation_is_found(reference, name, tmp_path):
    """A perturbed copy matches its original and stands out more than any film does among the others."""
    rows = np.linspace(0, len(reference["table"]) - 1, N_COPIES).astype(int)
    copies = []
    for i, row in enumerate(rows):
        with Image.open(reference["root"] / reference["table"]["path"].iloc[row]) as image:
            perturbed = PERTURBATIONS[name](image.convert("L"))
        perturbed.convert("L").save(tmp_path / f"{i}.png")
        prep = Preprocessing(AUDIT_SIZE, "stretch", 0.0, True)
        copies.append(torch.from_numpy(decode_resized(tmp_path / f"{i}.png", prep))[None])
    matches = pixel_matches(
        torch.stack(copies).float(), reference["features"], COARSE, FINE, K, reference["patients"]
    )
    assert list(matches.index) == list(rows)
    assert matches.distinctiveness.min() > reference["threshold"], (name, matches.distinctiveness)
    assert matches.similarity.min() > 0.95


def test_descriptor_ignores_brightness_contrast_and_uniform_resize():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 1, 96, 96)).astype(np.float32))
    base = COARSE.canonical(image)
    assert torch.allclose(COARSE.canonical(image * 0.5 + 0.2), base, atol=1e-4)
    assert float(base.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(base.sum()) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("shape", [(3, 1, 96, 96), (2, 1, 61, 47)])
@pytest.mark.parametrize(
    "descriptor", [COARSE, CorrelationDescriptor(grid=7, window=0.9, margins=(-0.15, 0.0, 0.2))]
)
def test_every_variant_at_once_equals_torchvisions_roi_align_window_by_window(descriptor, shape):
    """The two matrix products of ``variants`` give what ``roi_align`` samples for each window, including
    windows that reach past the image's edge (a margin of -0.15 at window 0.9)."""
    images = torch.from_numpy(np.random.default_rng(2).random(shape).astype(np.float32))
    prepared = descriptor.prepare(images)
    windows = torch.from_numpy(descriptor.windows())
    expected = descriptor.compute_boxes(prepared, windows.expand(len(images), -1, -1))
    assert descriptor.variants(prepared).shape == expected.shape
    assert torch.allclose(descriptor.variants(prepared), expected, atol=1e-5)


def test_nearest_is_exact_search():
    """Chunked top-k with variants and an exclusion mask equals brute force over the full matrix."""
    rng = np.random.default_rng(1)
    queries = torch.from_numpy(rng.standard_normal((7, 5, 16)).astype(np.float32))
    references = torch.from_numpy(rng.standard_normal((53, 16)).astype(np.float32))
    exclude = rng.random((7, 53)) < 0.2
    similarity, index = nearest(queries, references, k=3, exclude=exclude, max_block=70)
    full = np.einsum("qvd,rd->qvr", queries.numpy(), references.numpy()).max(axis=1)
    full[exclude] = -np.inf
    expected = np.argsort(-full, axis=1)[:, :3]
    assert (index == expected).all()
    assert np.allclose(similarity, np.take_along_axis(full, expected, axis=1), atol=1e-5)
