"""DICOM radiographs to display-ready grayscale: bright = dense (bone), dark = air (lungs), in every output.

The order follows the DICOM grayscale pipeline (PS3.4 N.2): stored values -> Modality LUT (rescale slope and
intercept, or a Modality LUT Sequence) -> VOI (a VOI LUT Sequence, else the first Window Center/Width) ->
MONOCHROME1 inverted, so that every output looks like MONOCHROME2. Without a VOI transform, 8-bit data keeps
its full 0-255 range and deeper data is stretched from its minimum to its maximum.

Pixel data are decoded by pydicom's plugins: uncompressed, RLE and deflated natively; JPEG baseline,
extended and lossless by ``pylibjpeg-libjpeg`` (or Pillow); JPEG 2000 by ``pylibjpeg-openjpeg`` (or Pillow).
All three are dependencies of cxrsyn. JPEG-baseline 8-bit images without a VOI transform, which is what the
RSNA challenge ships, can instead be handed to Pillow as JPEG bytes (see ``jpeg_baseline_frame``) so the
decode-once cache can use Pillow's DCT-domain downscaling.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragmented_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxrsyn.core.errors import CxrsynError

DICOM_SUFFIXES = (".dcm", ".dicom")
JPEG_BASELINE_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
PIXEL_DATA_PACKAGES = "pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
_FIX = "replace or re-download the file"
# Images with more pixels than this are bad files (``max_image_pixels`` of every source): Pillow's own
# threshold, far above any radiograph (about 4,300 x 3,500 = 15 M), far below what a decompression bomb claims.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class DicomDecodeError(CxrsynError):
    """A DICOM file that cannot become an image; the message names the file and the reason."""


# pydicom logs each plugin's failure with a traceback before raising; while we decode, those records are
# dropped: the one line we raise names the file and every plugin's reason.
_DECODING = threading.local()
_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins"


class _WhileDecoding(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_DECODING, "active", False)


_PYDICOM_DECODER_LOG = logging.getLogger("pydicom.pixels.decoders.base")
if not any(isinstance(f, _WhileDecoding) for f in _PYDICOM_DECODER_LOG.filters):
    _PYDICOM_DECODER_LOG.addFilter(_WhileDecoding())


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm`` name or the ``DICM`` marker after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_dataset(path: str | os.PathLike, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` with every failure turned into one line naming the file."""
    with warnings.catch_warnings():
        # RSNA stores PatientAge as '51', not the AS form '051Y': pydicom warns once per file
        warnings.filterwarnings("ignore", message="Invalid value for VR AS", category=UserWarning)
        return _read_dataset(Path(path), stop_before_pixels)


def _read_dataset(path: Path, stop_before_pixels: bool) -> Dataset:
    if path.stat().st_size == 0:
        raise DicomDecodeError(f"{path}: empty file (0 bytes); {_FIX}")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        try:  # files without the 128-byte preamble and DICM marker are still common
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        except Exception as error:  # noqa: BLE001 - any parse failure is a bad file
            raise DicomDecodeError(f"{path}: not a readable DICOM file ({_reason(error)}); {_FIX}") from None
    except Exception as error:  # noqa: BLE001
        raise DicomDecodeError(f"{path}: not a readable DICOM file ({_reason(error)}); {_FIX}") from None


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-frame radiograph to a float32 HxW array in [0, 1], bone bright."""
    dataset = read_dataset(path)
    return to_display(dataset, stored_pixels(dataset, path), path)


def stored_pixels(dataset: Dataset, path: str | os.PathLike) -> np.ndarray:
    """The stored values of the first frame (grayscale; colour is reduced to ITU-R 601 luma)."""
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise DicomDecodeError(f"{path}: DICOM file has no pixel data (no image in it); {_FIX}")
    check_dicom_size(dataset, path)
    _DECODING.active = True
    try:
        array = dataset.pixel_array
    except (RuntimeError, NotImplementedError) as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        if str(error).startswith(_ALL_PLUGINS_FAILED):  # handlers are there: the data are broken
            reasons = "; ".join(line.strip() for line in str(error).splitlines()[1:])
            raise DicomDecodeError(
                f"{path}: pixel data are corrupt ({syntax.name if syntax is not None else 'unknown syntax'}: "
                f"every decoder failed: {_reason(RuntimeError(reasons))}); {_FIX}"
            ) from None
        if syntax is not None and "plugin" in str(error).lower():
            raise DicomDecodeError(
                f"{path}: no installed pixel-data handler decodes transfer syntax {syntax.name} ({syntax}); "
                f"install them with pip install {PIXEL_DATA_PACKAGES}"
            ) from None
        raise DicomDecodeError(
            f"{path}: pixel data could not be decoded ({_reason(error)}); {_FIX}"
        ) from None
    except Exception as error:  # noqa: BLE001 - truncated or inconsistent pixel data
        raise DicomDecodeError(
            f"{path}: pixel data could not be decoded ({_reason(error)}); {_FIX}"
        ) from None
    finally:
        _DECODING.active = False
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        array = array[0]
    if array.ndim == 3:  # colour: pydicom returns RGB for RGB and YBR photometric interpretations
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return array


def check_dicom_size(dataset: Dataset, path: str | os.PathLike, max_pixels: int | None = None) -> None:
    """One line for a header claiming more pixels than ``max_pixels`` (default ``DEFAULT_MAX_IMAGE_PIXELS``),
    before any decoder allocates them."""
    limit = DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        pixels = int(dataset.get("Rows", 0) or 0) * int(dataset.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return
    if pixels > limit:
        raise DicomDecodeError(
            f"{path}: the header claims {dataset.Columns} x {dataset.Rows} = {pixels:,} pixels, more than the "
            f"limit of {limit:,} (a decompression bomb, or not a radiograph); {_FIX}"
        )


def to_display(dataset: Dataset, stored: np.ndarray, path: str | os.PathLike = "") -> np.ndarray:
    """Modality LUT -> VOI -> [0, 1] -> MONOCHROME1 inverted."""
    values = apply_modality_lut(stored, dataset) if stored.ndim == 2 else stored
    values = np.asarray(values, dtype=np.float64)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        values = _apply_voi(values, dataset)
        image = values  # already in [0, 1]
    else:
        bits = int(dataset.get("BitsStored", 8) or 8)
        if bits <= 8 and values.min() >= 0:
            image = values / float((1 << bits) - 1)
        else:
            low, high = float(values.min()), float(values.max())
            image = (values - low) / (high - low) if high > low else np.zeros_like(values)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        image = 1.0 - image
    if not np.isfinite(image).all():
        raise DicomDecodeError(f"{path}: pixel values are not finite after the VOI transform; {_FIX}")
    return image


def _apply_voi(values: np.ndarray, dataset: Dataset) -> np.ndarray:
    """The first VOI LUT, else the first window (linear, PS3.3 C.11.2.1.2.1), mapped onto [0, 1]."""
    if "VOILUTSequence" in dataset:
        item = dataset.VOILUTSequence[0]
        lut_bits = int(item.LUTDescriptor[2])
        return apply_voi_lut(values, dataset, index=0, prefer_lut=True) / float((1 << lut_bits) - 1)
    center = float(_first(dataset.WindowCenter))
    width = max(float(_first(dataset.WindowWidth)), 1.0)
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5, 0.0, 1.0)


def _first(value: object) -> object:
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


def jpeg_baseline_frame(dataset: Dataset) -> bytes | None:
    """The JPEG bytes of an 8-bit grayscale JPEG-baseline image whose display needs no LUT, else None.

    Such an image is fully described by its JPEG stream (plus inversion for MONOCHROME1), so Pillow can
    decode it directly, at a reduced scale when the output is smaller.
    """
    meta = getattr(dataset, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) not in JPEG_BASELINE_SYNTAXES:
        return None
    if int(dataset.get("SamplesPerPixel", 1)) != 1 or int(dataset.get("BitsStored", 8)) != 8:
        return None
    if int(dataset.get("NumberOfFrames", 1) or 1) != 1 or "PixelData" not in dataset:
        return None
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset or "ModalityLUTSequence" in dataset:
        return None
    if float(dataset.get("RescaleSlope", 1) or 1) != 1 or float(dataset.get("RescaleIntercept", 0) or 0) != 0:
        return None
    try:
        fragments = next(generate_fragmented_frames(dataset.PixelData, number_of_frames=1))
    except Exception:  # noqa: BLE001 - malformed encapsulation: let the full decoder report it
        return None
    return b"".join(fragments)


def is_monochrome1(dataset: Dataset) -> bool:
    return str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
