"""DICOM display pipeline on the real radiograph pydicom-data ships and on files pydicom writes here."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.dicom import read_dicom
from cxrsyn.data.images import read_grayscale
from cxrsyn.testing.datasets.common import chest_pixels, write_dicom

# One adult PA chest radiograph, MONOCHROME1, 15 bits stored: uncompressed (two byte orders) and JPEG 2000.
RG1_ENCODINGS = ("RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm")


def rg1(name: str) -> str:
    path = get_testdata_file(name, download=False)  # pydicom-data is a dev dependency: never downloads
    assert path is not None, f"{name} missing: pip install pydicom-data"
    return path


def lungs_and_spine(image: np.ndarray) -> tuple[float, float]:
    h, w = image.shape
    rows = slice(int(0.30 * h), int(0.50 * h))
    lungs = np.concatenate(
        [
            image[rows, int(0.25 * w) : int(0.35 * w)].ravel(),
            image[rows, int(0.67 * w) : int(0.77 * w)].ravel(),
        ]
    )
    spine = image[rows, int(0.48 * w) : int(0.53 * w)]
    return float(lungs.mean()), float(spine.mean())


@pytest.mark.parametrize("name", RG1_ENCODINGS)
def test_real_radiograph_decodes_with_bone_bright_in_every_encoding(name):
    dataset = pydicom.dcmread(rg1(name), stop_before_pixels=True)
    assert dataset.PhotometricInterpretation == "MONOCHROME1"  # stored dark = dense: must be inverted
    image = read_dicom(rg1(name))
    assert image.dtype == np.float32 and image.shape == (1955, 1841)
    assert image.min() >= 0.0 and image.max() <= 1.0
    lungs, spine = lungs_and_spine(image)
    assert spine > lungs + 0.2, (
        f"{name}: mediastinum/spine {spine:.3f} should be brighter than lungs {lungs:.3f}"
    )


def test_encodings_agree():
    reference = read_dicom(rg1("RG1_UNCR.dcm"))
    np.testing.assert_array_equal(read_dicom(rg1("RG1_J2KR.dcm")), reference)  # lossless
    lossy = read_dicom(rg1("RG1_J2KI.dcm"))
    assert np.abs(lossy - reference).mean() < 0.01


def test_cache_decode_of_real_radiograph_keeps_orientation():
    image = decode_resized(rg1("RG1_J2KR.dcm"), Preprocessing(image_size=128, resize="stretch")) / 255.0
    lungs, spine = lungs_and_spine(image)
    assert image.shape == (128, 128) and spine > lungs + 0.2


def test_monochrome1_8bit_equals_monochrome2(tmp_path):
    pixels = chest_pixels(64, label=1, seed=3)
    for syntax in ("explicit", "jpeg_baseline"):
        mono2 = read_dicom(write_dicom(tmp_path / f"m2-{syntax}.dcm", pixels, syntax=syntax))
        mono1 = read_dicom(
            write_dicom(tmp_path / f"m1-{syntax}.dcm", pixels, syntax=syntax, monochrome1=True)
        )
        tolerance = 0 if syntax == "explicit" else 3 / 255  # JPEG is lossy
        np.testing.assert_allclose(mono1, mono2, atol=tolerance + 1e-6)
    np.testing.assert_allclose(read_dicom(tmp_path / "m2-explicit.dcm"), pixels / 255.0, atol=1e-6)


def test_16bit_window_is_applied(tmp_path):
    pixels = (chest_pixels(64, label=0, seed=1).astype(np.uint16) * 16) + 1000  # 12-bit-like values
    path = write_dicom(tmp_path / "w.dcm", pixels, syntax="explicit", window=(3000.0, 2000.0))
    image = read_dicom(path)
    expected = np.clip((pixels - (3000 - 0.5)) / (2000 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    # without a window, deep data are stretched from min to max
    plain = read_dicom(write_dicom(tmp_path / "p.dcm", pixels, syntax="explicit"))
    assert plain.min() == 0.0 and plain.max() == 1.0


def test_voi_lut_sequence_is_applied(tmp_path):
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 4  # 0..1020
    path = write_dicom(tmp_path / "lut.dcm", pixels, syntax="explicit")
    dataset = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 10]  # entries, first stored value, bits per entry
    item.LUTData = [1023 - i for i in range(1024)]  # an inverting LUT
    item["LUTData"].VR = "US"
    dataset.VOILUTSequence = Sequence([item])
    dataset.save_as(path)
    image = read_dicom(path)
    np.testing.assert_allclose(image, (1023 - pixels) / 1023.0, atol=1e-6)


def test_jpeg_baseline_fast_path_matches_full_decode(tmp_path):
    pixels = chest_pixels(512, label=1, seed=5)
    path = write_dicom(tmp_path / "rsna.dcm", pixels, syntax="jpeg_baseline")
    fast = decode_resized(path, Preprocessing(image_size=96, fast_jpeg=True)).astype(float)
    full = decode_resized(path, Preprocessing(image_size=96, fast_jpeg=False)).astype(float)
    assert np.abs(fast - full).mean() < 2.0  # grey levels of 255
    assert np.abs(fast - full).max() < 24.0


def test_read_grayscale_dispatches_dicom(tmp_path):
    pixels = chest_pixels(32, label=0, seed=2)
    path = write_dicom(tmp_path / "x.dcm", pixels, syntax="explicit")
    np.testing.assert_allclose(read_grayscale(path), pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00garbage" * 10), "DICOM"),
        ("truncate", "could not be decoded"),
        ("no_pixels", "has no pixel data"),
    ],
)
def test_bad_dicoms_raise_one_line_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "bad.dcm"
    if make == "truncate":
        write_dicom(path, chest_pixels(64, 1, 0), syntax="explicit")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 3000])
    elif make == "no_pixels":
        write_dicom(path, chest_pixels(16, 1, 0), syntax="explicit")
        dataset = pydicom.dcmread(path)
        del dataset.PixelData
        dataset.save_as(path)
    else:
        make(path)
    for decode in (read_dicom, lambda p: decode_resized(p, Preprocessing(32))):
        with pytest.raises(CxrsynError) as caught:
            decode(path)
        message = str(caught.value)
        assert str(path) in message and reason in message and "\n" not in message
