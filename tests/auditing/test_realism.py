"""Part 6, realism: the grouped cross-validation and its interval under no signal, the image statistics and
regions against hand computations, and the detectors on phantom sets that differ only by a planted mark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from cxrsyn.auditing.realism import (
    EDGE_THRESHOLDS,
    REGIONS,
    RealismSettings,
    RegionSettings,
    cut_bottom,
    image_statistics,
    input_masks,
    lung_mask,
    occlusion_map,
    out_of_fold,
    reference_sample,
    region_masks,
    region_shares,
)
from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.transforms import rows_kept
from cxrsyn.evaluation.statistics import bootstrap_ci, out_of_fold_auroc


@pytest.fixture(scope="module")
def pair_realism(marked_pair):
    """The realism measurement of the marked against the unmarked set, both cut alike (crop_reference), at
    settings small enough for seconds: 48 px, 10 epochs, 3 folds, crops 0 and 0.3."""
    from cxrsyn.auditing.realism import realism_against
    from cxrsyn.auditing.sets import load_images, read_set
    from cxrsyn.data.sources import DatasetFolder

    sets = {name: read_set(name, DatasetFolder(root=str(root)), 64) for name, root in marked_pair.items()}
    settings = RealismSettings.from_section(
        {
            "crop_fractions": [0.0, 0.3],
            "crop_reference": True,
            "n_resamples": 500,
            "cnn": {"image_size": 48, "epochs": 10, "model_kwargs": {"channels": [16, 32, 64, 128]}},
        }
    )
    images = {name: load_images(item, workers=1) for name, item in sets.items()}
    return realism_against(
        images["marked"], sets["marked"].table, images["unmarked"], sets["unmarked"].table, settings, seed=0
    )


@pytest.mark.heavy
@pytest.mark.slow
def test_a_planted_bottom_mark_is_found_in_the_bottom_band_and_the_crop_removes_it(pair_realism):
    """The sets differ by the mark alone: the CNN tells them apart (AUROC near 1), most of its score drop
    comes from occluding the bottom band, and once both are cut by 0.3 they cannot be told apart (the
    interval covers 0.5); the statistics detector, global by design, sees the mark only weakly.

    Not generator-like against real-like films: those domains differ everywhere by design (contrast, noise,
    framing; AUROC 1.0 at every crop, docs/phantom.md), so a crop could never bring them to 0.5. Two
    real-like sets, the label burned into every film of one, isolate the mark."""
    cnn = pair_realism.result["cnn"]
    raw, cut = cnn["by_crop"]
    assert raw["auroc"] > 0.95 and raw["auroc_ci"][0] > 0.9 and cnn["distinguishable"]
    assert raw["saliency_share"]["bottom_band"] > 0.7
    assert raw["saliency_share"]["bottom_band"] > 2 * raw["saliency_share"]["area"]["bottom_band"]
    assert cut["auroc_ci"][0] < 0.5 < cut["auroc_ci"][1] and abs(cut["auroc"] - 0.5) < 0.1
    assert cut["saliency_share"]["bottom_band"] == 0.0 and cut["saliency_share"]["area"]["bottom_band"] == 0.0
    statistics = pair_realism.result["statistics"]
    assert statistics["by_crop"][1]["auroc_ci"][0] < 0.5 < statistics["by_crop"][1]["auroc_ci"][1]
    assert set(statistics["by_feature_group"]) == {"histogram", "noise_power", "edges"}


@pytest.mark.slow
def test_realism_aurocs_are_scikit_learns_on_the_scores_table(pair_realism):
    table = pair_realism.scores
    assert not table[["set", "path"]].duplicated().any() and list(table["set"].unique()) == [
        "audited",
        "reference",
    ]
    assert (table["set"] == "audited").sum() == pair_realism.result["n_audited"] == 100
    synthetic = (table["set"] == "audited").astype(int)
    for detector in ("cnn", "statistics"):
        for item in pair_realism.result[detector]["by_crop"]:
            expected = roc_auc_score(synthetic, table[f"{detector}_{item['crop_fraction']:g}"])
            assert item["auroc"] == pytest.approx(expected, abs=1e-12)
    for fraction in (0, 0.3):  # each prompt's (here: each film's) group sits in one fold
        assert table.groupby("group")[f"cnn_fold_{fraction:g}"].nunique().max() == 1
    assert (
        len(pair_realism.shown) == 8 and pair_realism.shown[0][1].sum() > 0
    )  # the figure's images, overlaid


# ---------------------------------------------------------------------------------- cross-validation
def _centroid(x: np.ndarray, y: np.ndarray):
    """The simplest linear learner: score = x . (mean of class 1 - mean of class 0) on the training rows."""

    def fit_predict(train: np.ndarray, test: np.ndarray, fold: int) -> np.ndarray:
        direction = x[train][y[train] == 1].mean(axis=0) - x[train][y[train] == 0].mean(axis=0)
        return x[test] @ direction

    return fit_predict


def test_groups_never_straddle_folds_and_every_item_is_scored_once():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30), np.zeros(40)].astype(int)
    groups = np.r_[np.repeat(np.arange(10), 3), 100 + np.repeat(np.arange(20), 2)]
    x = rng.normal(size=(70, 3))
    seen = []

    def fit_predict(train: np.ndarray, test: np.ndarray, fold: int) -> np.ndarray:
        assert not set(groups[train]) & set(groups[test])
        seen.extend(test)
        return _centroid(x, y)(train, test, fold)

    scores, fold_of = out_of_fold(y, groups, 5, 0, fit_predict)
    assert sorted(seen) == list(range(70)) and not np.isnan(scores).any()
    for group in np.unique(groups):
        assert len(set(fold_of[groups == group])) == 1
    with pytest.raises(CxrsynError, match=r"realism\.folds=5"):
        out_of_fold(y[:8], groups[:8], 5, 0, fit_predict)


def test_out_of_fold_interval_covers_half_95_percent_of_the_time_with_no_signal():
    """Seeded simulation with known truth (AUROC 0.5): clustered features carrying no class signal, 5-fold
    grouped cross-fitting. The bootstrap of the pooled scores alone covers 0.5 too rarely; widened by sqrt(2)
    (cross-fitting counts each pair of folds' chance agreement twice) it covers it about 95% of the time."""
    rng = np.random.default_rng(2026)
    widened, plain, aurocs = [], [], []
    for rep in range(200):
        groups = np.r_[np.repeat(np.arange(20), 2), 100 + np.repeat(np.arange(20), 2)]
        y = np.r_[np.ones(40), np.zeros(40)].astype(int)
        x = rng.normal(size=(140, 8))[groups % 100 + 20 * (groups >= 100)] + rng.normal(size=(80, 8))
        scores, _ = out_of_fold(y, groups, 5, rep, _centroid(x, y))
        result = out_of_fold_auroc(y, scores, groups, n_resamples=200, seed=rep)
        low, high = bootstrap_ci(y, scores, 200, rep, 0.05, patients=groups)["auroc_ci"]
        assert result["auroc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
        aurocs.append(result["auroc"])
        widened.append(result["auroc_ci"][0] <= 0.5 <= result["auroc_ci"][1])
        plain.append(low <= 0.5 <= high)
    assert abs(np.mean(aurocs) - 0.5) < 0.02
    assert 0.92 <= np.mean(widened) <= 0.98, np.mean(widened)
    assert np.mean(plain) < 0.9, np.mean(plain)


def test_reference_sample_matches_the_audited_class_balance():
    labels = np.r_[np.ones(100), np.zeros(400)].astype(int)
    rows = reference_sample(labels, np.r_[np.ones(30), np.zeros(30)], None, 0)
    assert len(rows) == 60 and labels[rows].sum() == 30 and len(set(rows)) == 60
    rows = reference_sample(labels, np.r_[np.ones(150), np.zeros(150)], None, 0)
    assert labels[rows].sum() == 100 and len(rows) == 250  # the positives run out


# ---------------------------------------------------------------------------------------- statistics
def test_histogram_is_numpys_and_edges_count_a_step_by_hand():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.random((3, 1, 20, 30)))
    features = image_statistics(images, bins=8, bands=4)
    for image, row in zip(images[:, 0].numpy(), features["histogram"], strict=True):
        expected, _ = np.histogram(image, bins=8, range=(0.0, 1.0))
        assert row == pytest.approx(expected / image.size)
    for image, row in zip(images[:, 0].numpy(), features["edges"], strict=True):  # scipy's 2-D Sobel
        magnitude = (
            np.hypot(ndimage.sobel(image, 0, mode="nearest"), ndimage.sobel(image, 1, mode="nearest")) / 4
        )
        assert row == pytest.approx([magnitude.mean(), *[(magnitude > t).mean() for t in EDGE_THRESHOLDS]])
    step = np.zeros((1, 1, 16, 16))
    step[..., 8:] = 0.5
    edges = image_statistics(torch.from_numpy(step), bins=8, bands=4)["edges"][0]
    # Sobel across a step of 0.5: (1 + 2 + 1) x 0.5 = 2 on the two columns beside it; / 4 = 0.5
    assert edges[0] == pytest.approx(2 * 16 * 0.5 / 256)
    assert list(edges[1:]) == pytest.approx([2 / 16] * 3)


def test_noise_power_is_flat_for_white_noise_and_peaks_at_a_sinusoids_frequency():
    rng = np.random.default_rng(5)
    noise = 0.5 + 0.1 * rng.normal(size=(4, 1, 64, 64))
    power = image_statistics(torch.from_numpy(noise), bins=8, bands=8)["noise_power"]
    assert 10 ** power.mean(axis=0) == pytest.approx(np.full(8, 0.01), rel=0.15)  # the variance, each band
    rows = np.arange(64)[:, None] * np.ones((1, 64))
    wave = 0.5 + 0.2 * np.sin(2 * np.pi * 0.3 * rows)  # 0.3 cycles/pixel: band (0.25, 0.3125]
    power = image_statistics(torch.from_numpy(wave[None, None]), bins=8, bands=8)["noise_power"][0]
    assert int(np.argmax(power)) == 4


@pytest.mark.parametrize("shape", [(64, 64), (63, 50), (40, 71)])
def test_noise_power_bands_are_the_full_planes_band_means(shape):
    """The half-plane computation (rfft2, mirrored columns counted twice) equals the definition: numpy's full
    two-dimensional FFT of the Hann-windowed image, power averaged over each band of radial frequency."""
    height, width = shape
    x = np.random.default_rng(6).random((3, height, width))
    window = np.outer(np.hanning(height), np.hanning(width))
    power = np.abs(np.fft.fft2((x - x.mean(axis=(1, 2), keepdims=True)) * window)) ** 2 / (window**2).sum()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij"))
    band = np.digitize(radius, np.linspace(0.0, 0.5, 9)[1:-1], right=True)
    valid = (radius > 0) & (radius <= 0.5)
    expected = np.log10(
        np.stack([power[:, valid & (band == b)].mean(axis=1) for b in range(8)], axis=1) + 1e-20
    )
    got = image_statistics(torch.from_numpy(x[:, None]), bins=8, bands=8)["noise_power"]
    assert got == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------------------- regions
def _chest(grid: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A bright body on dark air, two dark lung ellipses: the image and the lungs."""
    y, x = np.mgrid[0:grid, 0:grid] / grid
    image = np.where(np.abs(x - 0.5) < 0.42, 0.75, 0.05)
    lungs = np.zeros((grid, grid), bool)
    for centre in (0.32, 0.68):
        lungs |= ((x - centre) / 0.12) ** 2 + ((y - 0.42) / 0.2) ** 2 < 1
    return np.where(lungs, 0.3, image), lungs


def test_regions_partition_the_frame_and_the_lungs_are_found():
    image, lungs = _chest()
    settings = RegionSettings()
    masks = region_masks(image, settings)
    assert (sum(masks[name].astype(int) for name in REGIONS) == 1).all()
    assert (
        masks["bottom_band"][rows_kept(64, 0.3) :].all()
        and not masks["bottom_band"][: rows_kept(64, 0.3)].any()
    )
    assert masks["top_band"][: round(0.15 * 64)].all()
    found, truth = masks["lungs"], lungs & ~masks["top_band"] & ~masks["bottom_band"]
    assert (found & truth).sum() / (found | truth).sum() > 0.85
    box = (10, 45, 6, 58)
    assert not lung_mask(np.full((64, 64), 0.5), box).any()  # nothing dark: no lungs


def test_regions_as_the_cnn_sees_them_keep_the_rows_the_crop_kept_and_partition_the_input():
    image, _ = _chest()
    masks = [region_masks(image, RegionSettings())] * 2
    whole = input_masks(masks, 0.0, 32)
    assert whole.shape == (2, len(REGIONS), 32, 32) and (whole.sum(dim=1) == 1).all()
    cut = input_masks(masks, 0.3, 32)
    assert (cut.sum(dim=1) == 1).all() and not cut[:, REGIONS.index("bottom_band")].any()
    # the lungs, stretched by 64 / rows_kept(64, 0.3): nearest neighbour of the kept source rows
    lungs = masks[0]["lungs"][: rows_kept(64, 0.3)]
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(lungs[None, None].astype(np.float32)), (32, 32)
    )
    assert torch.equal(cut[0, REGIONS.index("lungs")], expected[0, 0] > 0.5)


def test_region_shares_are_shares_of_the_positive_score_drops_counted_by_hand():
    image, _ = _chest()
    regions = input_masks([region_masks(image, RegionSettings())] * 3, 0.0, 32)
    drops = np.array(
        [
            [2.0, 0.0, 1.0, 1.0, -3.0],  # bottom band 2 of 4, borders and lungs 1 each; a rise counts as 0
            [0.0, 0.0, 0.0, 0.0, 1.0],  # all in "other"
            [-1.0, -1.0, 0.0, 0.0, 0.0],  # no drop: counted apart
        ]
    )
    shares = region_shares(drops, regions)
    assert [shares[name] for name in REGIONS] == pytest.approx([0.25, 0.0, 0.125, 0.125, 0.5])
    assert shares["n_images"] == 2 and shares["n_images_without_a_drop"] == 1
    assert sum(shares["area"].values()) == pytest.approx(1.0)
    assert shares["area"]["bottom_band"] == pytest.approx((32 - rows_kept(32, 0.3)) / 32, abs=0.02)
    overlay = occlusion_map(regions[0], drops[0])
    assert overlay.sum() == pytest.approx(1.0, rel=1e-5)
    assert overlay[regions[0][REGIONS.index("bottom_band")]].sum() == pytest.approx(0.5, rel=1e-5)


def test_cut_bottom_keeps_the_rows_the_papers_crop_keeps():
    images = torch.arange(10.0).reshape(1, 1, 10, 1).expand(1, 1, 10, 3)
    assert cut_bottom(images, 0.3).shape[-2] == 7 and cut_bottom(images, 0.0) is images
    with pytest.raises(CxrsynError, match="crop_fractions"):
        RealismSettings.from_section({"crop_fractions": [0.0, 1.2]})
    with pytest.raises(CxrsynError, match="detectors"):
        RealismSettings.from_section({"detectors": ["cnn", "pixels"]})
