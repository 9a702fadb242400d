"""Report figures that may be committed stay small: compact_png rewrites a PNG under the byte limit."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxrsyn.core.fileio import COMMITTED_FIGURE_BYTES, compact_png


def test_a_large_figure_is_rewritten_under_the_limit_and_stays_a_picture(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1600, 1200, 3), dtype=np.uint8)  # noise: about 5.7 MB as PNG
    path = tmp_path / "grid.png"
    Image.fromarray(pixels).save(path)
    assert path.stat().st_size > COMMITTED_FIGURE_BYTES
    compact_png(path)
    assert path.stat().st_size <= COMMITTED_FIGURE_BYTES
    with Image.open(path) as small:
        assert small.format == "PNG" and small.width / small.height == 1200 / 1600


def test_a_small_figure_keeps_its_size_in_pixels(tmp_path):
    path = tmp_path / "curve.png"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(path)
    compact_png(path)
    with Image.open(path) as image:
        assert image.size == (400, 300)
