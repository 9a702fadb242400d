"""The PadChest layout as BIMCV ships it: the 160K label table and 16-bit grayscale PNGs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrsyn.testing.datasets.common import chest_pixels, write_csv, write_png16

# The table's columns written literally, as BIMCV ships them (not taken from the reader).
PADCHEST_COLUMNS = [
    "Unnamed: 0",
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
]


@dataclass(frozen=True)
class PadChestImage:
    image_id: str  # <StudyID>_<suffix>.png
    labels: Sequence[str] | None  # None: the Labels cell is empty
    projection: str = "PA"  # PA | AP | AP_horizontal | L | COSTAL | EXCLUDE | UNK
    patient_id: str = "1234"
    birth: str = "1950.0"
    sex: str = "F"
    study_date: str = "20140915"
    image_dir: int = 0
    method: str = "Physician"  # Physician | RNN_model
    pediatric: str = "No"
    manufacturer: str = "PhilipsMedicalSystems"
    bits: int = 12


def write_padchest_root(
    root: str | os.PathLike,
    images: Sequence[PadChestImage],
    layout: str = "zips",
    compressed: bool = True,
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """PadChest as downloaded: the 160K label table (``.csv.gz`` unless ``compressed`` is False) and 16-bit
    grayscale PNGs holding ``bits``-bit values, in ``<ImageDir>/`` folders (``zips``) or all in ``root``
    (``flat``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, im in enumerate(images):
        values = {column: "" for column in PADCHEST_COLUMNS}
        values.update(
            {
                "Unnamed: 0": number,
                "ImageID": im.image_id,
                "ImageDir": im.image_dir,
                "StudyDate_DICOM": im.study_date,
                "StudyID": im.image_id.split("_")[0],
                "PatientID": im.patient_id,
                "PatientBirth": im.birth,
                "PatientSex_DICOM": im.sex,
                "Projection": im.projection,
                "Pediatric": im.pediatric,
                "Manufacturer_DICOM": im.manufacturer,
                "PhotometricInterpretation_DICOM": "MONOCHROME2",
                "BitsStored_DICOM": im.bits,
                "MethodLabel": im.method,
                "Labels": "" if im.labels is None else repr(list(im.labels)),
                "Report": "sin hallazg patolog",
            }
        )
        rows.append(list(values.values()))
        folder = root / str(im.image_dir) if layout == "zips" else root
        folder.mkdir(parents=True, exist_ok=True)
        label = int(im.labels is not None and "pneumonia" in im.labels)
        pixels = chest_pixels(image_size, label, seed + number, render_size=max(32, image_size))
        write_png16(folder / im.image_id, pixels, im.bits)
    name = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    write_csv(root / (f"{name}.gz" if compressed else name), PADCHEST_COLUMNS, rows)
    return root
