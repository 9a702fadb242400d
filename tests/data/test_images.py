import numpy as np
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.images import check_image_header, read_grayscale


def test_8_bit_grayscale_scales_to_unit_range(tmp_path):
    Image.fromarray(np.array([[0, 255], [51, 102]], np.uint8)).save(tmp_path / "a.png")
    image = read_grayscale(tmp_path / "a.png")
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, [[0, 1], [0.2, 0.4]], atol=1e-6)


def test_16_bit_keeps_precision(tmp_path):
    pixels = np.array([[0, 65535], [1, 32768]], np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_grayscale(tmp_path / "a.png")
    np.testing.assert_allclose(image, pixels / 65535.0, atol=1e-7)
    assert image[1, 0] > 0  # a value that 8 bits would have lost


def test_rgb_is_converted_to_luma(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 1] = 255  # pure green: luma 0.587
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=100)
    image = read_grayscale(tmp_path / "a.jpg")
    assert image.shape == (2, 2)
    assert abs(float(image.mean()) - 0.587) < 0.02


def test_missing_empty_and_non_image_files_fail_the_header_check(tmp_path):
    with pytest.raises(CxrsynError, match=r"missing\.png is listed in the manifest but missing"):
        check_image_header(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CxrsynError, match=r"empty\.png is empty \(0 bytes\)"):
        check_image_header(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(CxrsynError, match=r"text\.png is not a readable image"):
        check_image_header(tmp_path / "text.png")


def test_truncated_image_passes_the_header_check_but_fails_to_decode(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    check_image_header(tmp_path / "cut.png")
    with pytest.raises(CxrsynError, match=r"cut\.png could not be decoded"):
        read_grayscale(tmp_path / "cut.png")
