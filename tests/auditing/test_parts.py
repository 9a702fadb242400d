"""The statistics of the audit parts against independent references, and the exclude file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrsyn.auditing.artifacts import class_artifacts
from cxrsyn.auditing.distance import bootstrap_kid, kid, mean_pairwise_cosine
from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.sources import DatasetFolder


def unbiased_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook unbiased MMD^2 with KID's kernel k(a, b) = (a.b / d + 1)^3, by explicit double loops."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_on_whole_sets_is_the_unbiased_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.5
    value, spread = kid(x, y, subsets=3, subset_size=12)  # every subset is the whole set
    assert value == pytest.approx(unbiased_mmd(x, y), rel=1e-9)
    assert spread == pytest.approx(0.0, abs=1e-12)


def resampled_mmd(x: np.ndarray, y: np.ndarray, draws_x: np.ndarray, draws_y: np.ndarray) -> float:
    """The unbiased MMD^2 of explicitly resampled sets, by loops over positions: within a set, two positions
    holding copies of the same original image are not a pair (their kernel value is self-similarity)."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    def within(data, draws):
        pairs = [(i, j) for i in draws for j in draws if i != j]  # original indices of position pairs
        return sum(k(data[i], data[j]) for i, j in pairs) / len(pairs)

    across = sum(k(x[i], y[j]) for i in draws_x for j in draws_y) / (len(draws_x) * len(draws_y))
    return within(x, draws_x) + within(y, draws_y) - 2 * across


def test_bootstrap_kid_leaves_out_pairs_of_copies_of_one_image():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((9, 4)), rng.standard_normal((7, 4))
    values = bootstrap_kid(x, y, 5, np.random.default_rng(3))
    replay = np.random.default_rng(3)
    counts_x = replay.multinomial(9, np.full(9, 1 / 9), size=5)
    counts_y = replay.multinomial(7, np.full(7, 1 / 7), size=5)
    for b in range(5):
        draws_x, draws_y = np.repeat(np.arange(9), counts_x[b]), np.repeat(np.arange(7), counts_y[b])
        assert len(set(draws_x)) < 9  # duplicates drawn: the case the definition is about
        assert values[b] == pytest.approx(resampled_mmd(x, y, draws_x, draws_y), rel=1e-9)
    # a resample without duplicates is the set itself: KID on the whole sets (torchmetrics')
    whole = resampled_mmd(x, y, np.arange(9), np.arange(7))
    assert whole == pytest.approx(unbiased_mmd(x, y), rel=1e-12)
    assert kid(x, y, subsets=2, subset_size=7)[0] != pytest.approx(whole)  # subsets of 7 differ from 9 vs 7


def _shifted(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    """Features of n images: standard normal in 4 dimensions, the first moved by ``shift``."""
    features = rng.standard_normal((n, 4))
    features[:, 0] += shift
    return features


@pytest.fixture
def one_torch_thread():
    """Matrices of 80 x 80: one thread is faster than two that share a busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_kid_bootstrap_interval_covers_the_true_kid_about_95_percent_of_the_time(shift, one_torch_thread):
    """Seeded simulation with a known truth: 150 pairs of sets of 80 vs 80 images. Under identical
    distributions (truth 0) the CI covers 0 at least ~95% of the time (no false alarm; the unbiased estimate
    is degenerate there, so the bootstrap is cautious); under a shift it covers the true KID (the mean of the
    unbiased estimate over 4 pairs of sets of 1,500) near 95% of the time. (The definition that kept pairs of
    copies covered 0 under the null in 0% and the shifted truth in 55%.)"""
    rng = np.random.default_rng(7)
    truth = 0.0
    if shift:
        truth = np.mean(
            [unbiased_mmd_fast(_shifted(rng, 1500, shift), _shifted(rng, 1500, 0.0)) for _ in range(4)]
        )
    covered = []
    for _ in range(150):
        values = bootstrap_kid(_shifted(rng, 80, shift), _shifted(rng, 80, 0.0), 200, rng)
        low, high = np.quantile(values, [0.025, 0.975])
        covered.append(low <= truth <= high)
    coverage = np.mean(covered)
    mc_se = np.sqrt(0.05 * 0.95 / 150)
    assert coverage >= 0.95 - 2 * mc_se, coverage
    if shift:
        assert truth > 0.1 and coverage <= 0.95 + 2 * mc_se, (truth, coverage)


def unbiased_mmd_fast(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook unbiased MMD^2 (``unbiased_mmd``) with matrix products, for large sets."""
    d = x.shape[1]
    k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return (
        (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
        - 2 * k_xy.mean()
    )


def test_mean_pairwise_cosine_by_hand():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = (0.0 + 2**-0.5 + 2**-0.5) / 3
    assert mean_pairwise_cosine(embeddings) == pytest.approx(expected)


def test_artifacts_find_a_planted_corner_mark_and_nothing_in_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    images = torch.from_numpy(rng.normal(0.5, 0.1, (120, 1, 32, 32)).astype(np.float32))
    settings = {
        "grid": 32,
        "band_fraction": 0.3,
        "corner_fraction": 0.15,
        "n_permutations": 200,
        "alpha": 0.01,
    }
    clean, _ = class_artifacts(images, labels, settings, seed=0)
    assert clean["flagged"] == []
    marked = images.clone()
    marked[labels == 1, :, 28:31, 1:4] = 0.95  # bottom left (the corner is 5 x 5 pixels), pneumonia only
    result, maps = class_artifacts(marked, labels, settings, seed=0)
    assert set(result["flagged"]) == {"bottom_band", "bottom_left"}
    assert result["strongest_region"]["box"] == [1 / 32, 28 / 32, 4 / 32, 31 / 32]
    assert result["strongest_region"]["sign"] == "brighter in pneumonia"
    # the band share is the share of the squared mean difference, recomputed here by hand
    diff = marked[labels == 1, 0].double().mean(0) - marked[labels == 0, 0].double().mean(0)
    energy = (diff**2).numpy()
    assert result["bottom_band_share"] == pytest.approx(energy[22:].sum() / energy.sum(), rel=1e-9)


def _folder(root, n=6):
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(root / f"images/{i}.png")
        rows.append({"path": f"images/{i}.png", "label": i % 2})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)


def test_exclude_file_leaves_listed_images_out_and_counts_them(tmp_path):
    from cxrsyn.data.datamodule import CXRDataModule

    _folder(tmp_path / "set", n=8)
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# flagged by the audit\nimages/1.png\n\nimages/4.png\nimages/not_there.png\n")
    source = DatasetFolder(root=str(tmp_path / "set"), exclude_file=str(exclude))
    module = CXRDataModule(train=source, image_size=8, num_workers=0, val_fraction=0.25)
    module.setup("fit")
    kept = set(module.tables["train"]["path"]) | set(module.tables["val"]["path"])
    assert kept == {f"images/{i}.png" for i in (0, 2, 3, 5, 6, 7)}
    found = module.summary["train_sources"][str(tmp_path / "set")]["found"]
    assert found["excluded"] == 2 and found["exclude_unmatched"] == 1 and found["manifest_rows"] == 8


def test_missing_exclude_file_is_one_line(tmp_path):
    from cxrsyn.data.sources import apply_exclude_file

    _folder(tmp_path / "set")
    source = DatasetFolder(root=str(tmp_path / "set"), exclude_file=str(tmp_path / "nope.txt"))
    with pytest.raises(CxrsynError, match="exclude_file=.*nope.txt does not exist"):
        apply_exclude_file(source, source.index())
