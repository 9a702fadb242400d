"""The crop changes nothing but the removed rows: one arithmetic (ceil(f x H) rows of the stored image), the
same pixels from the on-the-fly transform, the decode-once cache and ``cxrsyn.postprocess``, and the same
geometry (no padding) for a cropped and a raw image on their way into the model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrsyn.core.manifest import write_manifest
from cxrsyn.data.decode import Preprocessing, decode_resized, draft_scale
from cxrsyn.data.images import read_grayscale
from cxrsyn.data.transforms import build_transform, crop_bottom, rows_kept
from cxrsyn.generate.postprocess import crop_folder
from tests.conftest import compose_config

# height -> rows kept at f = 0.3, by hand: removed = ceil(0.3 x H)
KEPT_AT_0_3 = {5: 3, 10: 7, 15: 10, 717: 501, 1023: 716, 1024: 716}


@pytest.mark.parametrize(("height", "kept"), sorted(KEPT_AT_0_3.items()))
def test_rows_removed_are_the_ceiling_of_the_fraction_of_the_height(height, kept):
    # 5: 1.5 -> 2 removed; 10: 3.0000000000000004 in floating point is 3; 15: 4.5 -> 5; 717: 215.1 -> 216;
    # 1023: 306.9 -> 307; 1024: 307.2 -> 308
    assert rows_kept(height, 0.3) == kept
    assert crop_bottom(np.zeros((height, 4)), 0.3).shape == (kept, 4)


def test_rows_kept_at_other_fractions_by_hand():
    assert rows_kept(5, 0.5) == 2  # 2.5 -> 3 removed
    assert rows_kept(100, 0.0) == 100
    assert rows_kept(3, 0.9) == 1  # at least one row stays


def random_png(path, height: int, width: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.mark.parametrize("height", [15, 717, 1023, 1024])
def test_transform_cache_and_postprocess_give_identical_pixels(tmp_path, height):
    width, size = 300, 64
    source = tmp_path / "raw"
    (source / "images").mkdir(parents=True)
    random_png(source / "images" / "a.png", height, width, seed=height)
    write_manifest(source, [{"path": "images/a.png", "label": 1}])
    crop_folder(source, tmp_path / "cropped", 0.3)

    raw = read_grayscale(source / "images" / "a.png")
    on_the_fly = build_transform(size, "stretch", crop_bottom_fraction=0.3)(image=raw)["image"][0].numpy()
    stored = read_grayscale(tmp_path / "cropped" / "images" / "a.png")
    assert stored.shape == (KEPT_AT_0_3[height], width)
    np.testing.assert_array_equal(stored, raw[: KEPT_AT_0_3[height]])
    from_postprocess = build_transform(size, "stretch")(image=stored)["image"][0].numpy()
    np.testing.assert_array_equal(on_the_fly, from_postprocess)
    cached = decode_resized(source / "images" / "a.png", Preprocessing(size, "stretch", 0.3))
    np.testing.assert_array_equal(cached, np.clip(np.rint(on_the_fly * 255.0), 0, 255).astype(np.uint8))


def test_jpeg_draft_decoding_crops_at_the_stored_images_rows(tmp_path):
    """JPEG data decoded at a reduced DCT scale are cropped where the full image would be: the scale is one
    that divides the kept rows, and the result is within a few grey levels of the full decode."""
    height = width = 1024
    pixels = np.zeros((height, width), np.uint8)
    pixels[:716] = 200  # kept rows bright, removed rows (716..1023) dark: any misplaced row shows
    Image.fromarray(pixels).save(tmp_path / "a.jpeg", quality=95)
    prep = Preprocessing(64, "stretch", 0.3)
    assert draft_scale(width, height, prep) == 4  # 716 rows: divisible by 4, not by 8
    assert draft_scale(width, height, Preprocessing(64, "stretch", 0.0)) == 8
    fast = decode_resized(tmp_path / "a.jpeg", prep).astype(int)
    exact = decode_resized(tmp_path / "a.jpeg", Preprocessing(64, "stretch", 0.3, fast_jpeg=False)).astype(
        int
    )
    assert np.abs(fast - exact).max() <= 3
    assert fast[-1].mean() > 190  # the bottom row of the crop is still a bright (kept) row


def test_a_cropped_and_a_raw_image_reach_the_model_with_the_same_padding_none():
    cfg = compose_config("train", ["+experiment=crop_ablation", "source=phantom"])
    assert cfg.datamodule.resize == "stretch"
    size = int(cfg.datamodule.image_size)
    white = np.ones((1024, 1024), np.float32)
    for fraction in (0.0, 0.3):
        tensor = build_transform(size, cfg.datamodule.resize, crop_bottom_fraction=fraction)(image=white)
        np.testing.assert_allclose(tensor["image"].numpy(), 1.0, atol=1e-6)  # every pixel image, no padding
    # letterbox, the old default, padded the cropped image (1024 x 716) and not the raw one
    letterboxed = build_transform(size, "letterbox", crop_bottom_fraction=0.3)(image=white)["image"].numpy()
    assert (letterboxed == 0).any()
