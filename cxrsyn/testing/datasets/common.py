"""What every layout writer uses: a phantom radiograph's pixels (``chest_pixels``), a DICOM file like
RSNA's (``write_dicom``), a 16-bit PNG like PadChest's (``write_png16``) and a CSV file, gzipped when its
name ends in ``.gz`` (``write_csv``)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from cxrsyn.phantom.grid import AttributeGrid
from cxrsyn.phantom.simulator import PhantomSpec, render

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def chest_pixels(
    size: int, label: int, seed: int, render_size: int = 128, grain_seed: int | None = None
) -> np.ndarray:
    """A square uint8 real-like phantom radiograph (drawn at ``render_size``, then resized, with film grain
    drawn from ``grain_seed``, default ``seed``)."""
    spec = PhantomSpec(domain="real_like", n_per_class=1, seed=seed, image_size=max(32, render_size))
    cell = AttributeGrid(spec.attributes).sample(1, seed)[0 if label == 1 else 1]
    image, _ = render(cell, spec)
    image = cv2.resize(
        image, (size, size), interpolation=cv2.INTER_CUBIC if size > render_size else cv2.INTER_AREA
    )
    grain = np.random.default_rng(seed if grain_seed is None else grain_seed).normal(0.0, 4.0, image.shape)
    return np.clip(image.astype(np.float64) + grain, 0, 255).astype(np.uint8)


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    patient_id: str = "anonymous",
    age: str = "",
    sex: str = "",
    view: str = "PA",
    syntax: str = "jpeg_baseline",
    monochrome1: bool = False,
    window: tuple[float, float] | None = None,
    jpeg_quality: int = 95,
) -> Path:
    """A Secondary Capture CR radiograph like RSNA's. ``pixels``: uint8 (8-bit) or uint16 (``explicit`` only),
    bright = dense; with ``monochrome1`` the stored values are inverted and the file says MONOCHROME1."""
    pixels = np.asarray(pixels)
    bits = 8 if pixels.dtype == np.uint8 else 16
    stored = (np.iinfo(pixels.dtype).max - pixels) if monochrome1 else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if syntax == "jpeg_baseline" else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ConversionType, ds.BodyPartExamined = "CR", "WSD", "CHEST"
    ds.PatientID = ds.PatientName = patient_id
    with warnings.catch_warnings():  # RSNA's ages are plain numbers, which pydicom flags as invalid AS
        warnings.filterwarnings("ignore", message="Invalid value for VR AS", category=UserWarning)
        ds.PatientAge = age
    ds.PatientSex, ds.ViewPosition = sex, view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if syntax == "jpeg_baseline":
        if bits != 8:
            raise ValueError("JPEG baseline holds 8-bit pixels only")
        buffer = io.BytesIO()
        Image.fromarray(stored).save(buffer, format="JPEG", quality=jpeg_quality)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    elif syntax == "explicit":
        ds.PixelData = stored.astype(np.uint8 if bits == 8 else "<u2").tobytes()
    else:
        raise ValueError(f"unknown syntax {syntax!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png16(path: str | os.PathLike, pixels: np.ndarray, bits: int = 12) -> np.ndarray:
    """A 16-bit grayscale PNG whose values use only the low ``bits`` bits, as PadChest's do (uint8 ``pixels``
    mapped onto an offset part of that range); returns the stored values."""
    top = (1 << bits) - 1
    stored = np.rint(top * 0.05 + pixels.astype(np.float64) / 255.0 * top * 0.9).astype(np.uint16)
    Image.fromarray(stored).save(path)
    return stored


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A CSV file as the datasets' owners write them (CRLF line ends), gzipped when ``path`` ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
