"""Writers of the real datasets' layouts, filled with phantom radiographs: for tests, benchmarks and demos.

``write_rsna_root`` writes the RSNA challenge's CSVs (unsorted, one row per box) and DICOM files written by
pydicom (JPEG baseline like the real ones, or uncompressed); ``write_kermany_root`` writes the Kaggle or
Mendeley folder trees with their quirks (duplicate nested tree, ``__MACOSX/`` resource forks, ``.DS_Store``,
RGB JPEGs among grayscale ones); ``write_nih_root``, ``write_chexpert_root`` and ``write_padchest_root``
write those datasets' label tables and image trees (PadChest's as 16-bit PNGs). Nothing here is real patient
data.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
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
# RSNA's names, written out as Kaggle ships them (not imported from the reader the fixtures test)
RSNA_LABELS_CSV = "stage_2_train_labels.csv"
RSNA_CLASSES_CSV = "stage_2_detailed_class_info.csv"
RSNA_IMAGES = "stage_2_train_images"
RSNA_NORMAL, RSNA_OPACITY, RSNA_NOT_NORMAL = "Normal", "Lung Opacity", "No Lung Opacity / Not Normal"


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


@dataclass(frozen=True)
class RsnaPatient:
    patient_id: str
    detailed_class: str  # Normal | Lung Opacity | No Lung Opacity / Not Normal
    n_boxes: int = 0  # rows with Target 1 (Lung Opacity only)
    age: str = "51"  # as RSNA stores it: a plain number
    sex: str = "M"
    view: str = "PA"


def write_rsna_root(
    root: str | os.PathLike,
    patients: Sequence[RsnaPatient],
    image_size: int = 64,
    with_classes: bool = True,
    seed: int = 0,
    syntax: str = "jpeg_baseline",
) -> Path:
    """An RSNA-layout folder: unsorted label rows (one per box), the detailed class file, one DICOM per patient."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    label_rows, class_rows = [], []
    for patient in patients:
        positive = patient.detailed_class == RSNA_OPACITY
        boxes = max(1, patient.n_boxes) if positive else 1
        for _ in range(boxes):
            if positive:
                x, y = rng.integers(100, 600, 2)
                w, h = rng.integers(100, 300, 2)
                label_rows.append([patient.patient_id, x, y, w, h, 1])
            else:
                label_rows.append([patient.patient_id, "", "", "", "", 0])
            class_rows.append([patient.patient_id, patient.detailed_class])
    order = rng.permutation(len(label_rows))  # the real files are not sorted
    _write_csv(
        root / RSNA_LABELS_CSV,
        ["patientId", "x", "y", "width", "height", "Target"],
        [label_rows[i] for i in order],
    )
    if with_classes:
        _write_csv(root / RSNA_CLASSES_CSV, ["patientId", "class"], [class_rows[i] for i in order])
    for number, patient in enumerate(patients):
        pixels = chest_pixels(image_size, int(patient.detailed_class == RSNA_OPACITY), seed + number)
        write_dicom(
            root / RSNA_IMAGES / f"{patient.patient_id}.dcm",
            pixels,
            patient_id=patient.patient_id,
            age=patient.age,
            sex=patient.sex,
            view=patient.view,
            syntax=syntax,
        )
    return root


def rsna_patients(n_normal: int, n_opacity: int, n_not_normal: int, seed: int = 0) -> list[RsnaPatient]:
    """Patients with ids like RSNA's, mixed views and sexes, some with several boxes."""
    rng = np.random.default_rng(seed)
    patients = []
    for klass, count in (
        (RSNA_NORMAL, n_normal),
        (RSNA_OPACITY, n_opacity),
        (RSNA_NOT_NORMAL, n_not_normal),
    ):
        for _ in range(count):
            patients.append(
                RsnaPatient(
                    patient_id=str(_uuid(rng)),
                    detailed_class=klass,
                    n_boxes=int(rng.integers(1, 4)) if klass == RSNA_OPACITY else 0,
                    age=str(int(rng.integers(2, 90))),
                    sex=str(rng.choice(["M", "F"])),
                    view=str(rng.choice(["PA", "AP"])),
                )
            )
    return patients


def _uuid(rng: np.random.Generator) -> str:
    digits = "".join(f"{value:02x}" for value in rng.integers(0, 256, 16))
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


KERMANY_LAYOUTS = ("kaggle", "mendeley_v2", "mendeley_v3")


def write_kermany_root(
    root: str | os.PathLike,
    counts: dict[str, tuple[int, int]],
    layout: str = "kaggle",
    image_size: int = 48,
    quirks: bool = True,
    seed: int = 0,
    images_per_patient: int = 1,
) -> Path:
    """A Kermany tree. ``counts``: split -> (normal, pneumonia) images. Kaggle names pneumonia files
    ``person<N>_bacteria_<M>.jpeg`` / ``person<N>_virus_<M>.jpeg`` and normals ``IM-<N>-<M>.jpeg`` /
    ``NORMAL2-IM-<N>-<M>.jpeg``; Mendeley v3 ``BACTERIA-<id>-<M>.jpeg``. ``images_per_patient``: consecutive
    images of a class share a patient (N) and differ only in film grain: near copies.
    With ``quirks``: Kaggle's duplicate ``chest_xray/chest_xray`` tree, ``__MACOSX/._*`` forks, ``.DS_Store``,
    every third image saved as RGB."""
    if layout not in KERMANY_LAYOUTS:
        raise ValueError(f"layout must be one of {KERMANY_LAYOUTS}")
    root = Path(root)
    base = root / ("CellData/chest_xray" if layout == "mendeley_v3" else "chest_xray")
    number = 0
    written: list[Path] = []
    for split, (n_normal, n_pneumonia) in counts.items():
        for label, count in ((0, n_normal), (1, n_pneumonia)):
            folder = base / split / ("PNEUMONIA" if label else "NORMAL")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                number += 1
                patient, image_number = divmod(i, images_per_patient)
                patient_number = number - image_number  # the number of the patient's first image
                name = _kermany_name(layout, label, patient, patient_number, image_number + 1)
                pixels = chest_pixels(
                    image_size,
                    label,
                    seed + patient_number,
                    render_size=max(32, image_size),
                    grain_seed=seed + number,
                )
                image = Image.fromarray(pixels)
                if quirks and number % 3 == 0:
                    image = image.convert("RGB")
                image.save(folder / name, format="JPEG", quality=90)
                written.append(folder / name)
    if quirks:
        for path in written:
            relative = path.relative_to(root)
            fork = root / "__MACOSX" / relative.parent / f"._{path.name}"
            fork.parent.mkdir(parents=True, exist_ok=True)
            fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
        (base / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (written[0].parent / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        if layout == "kaggle":
            for path in written:
                copy = base / "chest_xray" / path.relative_to(base)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(path.read_bytes())
    return root


def _kermany_name(layout: str, label: int, patient: int, number: int, image: int) -> str:
    kind = "bacteria" if patient % 3 else "virus"
    if layout == "mendeley_v3":
        return f"{kind.upper() if label else 'NORMAL'}-{1000 + number}-{image:04d}.jpeg"
    if label:
        return f"person{number}_{kind}_{image}.jpeg"
    return f"IM-{number:04d}-{image:04d}.jpeg" if patient % 2 else f"NORMAL2-IM-{number:04d}-{image:04d}.jpeg"


# ------------------------------------------------------------------------ NIH ChestX-ray14, CheXpert, PadChest
# Names and columns below are written literally, as the owners ship them (not taken from the readers).
NIH_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


@dataclass(frozen=True)
class NihImage:
    patient_id: int
    follow_up: int
    findings: str  # Finding Labels: "No Finding" or labels joined by "|"
    age: str = "58"
    sex: str = "M"
    view: str = "PA"
    split: str = "train_val"  # which official list names it: train_val | test
    airspace_opacity: str = ""  # YES | NO: in Google's expert labels; empty: not there
    expert_set: str = "test"  # test | validation

    @property
    def image_index(self) -> str:
        return f"{self.patient_id:08d}_{self.follow_up:03d}.png"


def write_nih_root(
    root: str | os.PathLike,
    images: Sequence[NihImage],
    layout: str = "kaggle",
    label_file: str = "Data_Entry_2017_v2020.csv",
    sex_column: str = "Patient Gender",
    split_lists: bool = True,
    expert_files: str = "google_cloud",
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """An NIH tree: the label table, 8-bit PNGs (every fourth saved as RGBA, as some real ones are) in
    ``images_001/images/`` ... (``kaggle``) or ``images/`` (``nih_box``), the official split lists and
    Google's expert labels (``google_cloud``: four_findings_expert_labels/{test,validation}_labels.csv;
    ``torchxrayvision``: its combined google2019_nih-chest-xray-labels.csv.gz; ``none``)."""
    root = Path(root)
    columns = [sex_column if c == "Patient Gender" else c for c in NIH_COLUMNS]
    rows = [
        [
            im.image_index,
            im.findings,
            im.follow_up,
            im.patient_id,
            im.age,
            im.sex,
            im.view,
            2500,
            2048,
            0.168,
            0.168,
        ]
        for im in images
    ]
    _write_csv(root / label_file, columns, rows)
    for number, image in enumerate(images):
        folder = (
            root / f"images_{1 + number * 12 // max(1, len(images)):03d}" / "images"
            if layout == "kaggle"
            else root / "images"
        )
        folder.mkdir(parents=True, exist_ok=True)
        label = int("Pneumonia" in image.findings.split("|"))
        picture = Image.fromarray(
            chest_pixels(image_size, label, seed + number, render_size=max(32, image_size))
        )
        (picture.convert("RGBA") if number % 4 == 3 else picture).save(folder / image.image_index)
    if split_lists:
        for split, name in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
            names = [im.image_index for im in images if im.split == split]
            (root / name).write_text("".join(f"{n}\n" for n in names))
    expert = [im for im in images if im.airspace_opacity]
    expert_columns = [*columns, "Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass"]
    if expert_files == "google_cloud":
        for expert_set, name in (("test", "test_labels.csv"), ("validation", "validation_labels.csv")):
            chosen = [im for im in expert if im.expert_set == expert_set]
            _write_csv(
                root / "four_findings_expert_labels" / name,
                expert_columns,
                [[*rows[images.index(im)], "NO", "NO", im.airspace_opacity, "NO"] for im in chosen],
            )
    elif expert_files == "torchxrayvision":
        table = [
            [
                *rows[images.index(im)],
                "NO",
                "NO",
                im.airspace_opacity,
                "NO",
                "val" if im.expert_set == "validation" else "test",
            ]
            for im in expert
        ]
        buffer = io.StringIO()
        csv.writer(buffer).writerows([[*expert_columns, "Set Id"], *table])
        with gzip.open(root / "google2019_nih-chest-xray-labels.csv.gz", "wt", newline="") as handle:
            handle.write(buffer.getvalue())
    return root


CHEXPERT_FINDINGS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


@dataclass(frozen=True)
class CheXpertImage:
    patient: int
    study: int = 1
    view_number: int = 1
    frontal: bool = True
    ap_pa: str = "AP"  # AP | PA | LL | RL for frontal images; blank for lateral ones
    sex: str = "Female"  # Female | Male | Unknown
    age: int = 60
    pneumonia: float | None = None  # 1, 0, -1 or blank
    no_finding: float | None = None  # 1 or blank
    split: str = "train"  # train | valid

    @property
    def path(self) -> str:
        kind = "frontal" if self.frontal else "lateral"
        return f"{self.split}/patient{self.patient:05d}/study{self.study}/view{self.view_number}_{kind}.jpg"


def write_chexpert_root(
    root: str | os.PathLike,
    images: Sequence[CheXpertImage],
    folder: str = "CheXpert-v1.0-small",
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """CheXpert as unzipped: ``root/<folder>/{train,valid}.csv`` whose Path column starts with ``<folder>/``,
    and one 8-bit JPEG per row under ``root/<folder>/{train,valid}/patientNNNNN/studyN/``."""
    root = Path(root)
    base = root / folder
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
    for split in ("train", "valid"):
        chosen = [im for im in images if im.split == split]
        if not chosen:
            continue
        rows = []
        for im in chosen:
            findings = {name: "" for name in CHEXPERT_FINDINGS}
            findings["Pneumonia"] = "" if im.pneumonia is None else f"{float(im.pneumonia):.1f}"
            findings["No Finding"] = "" if im.no_finding is None else f"{float(im.no_finding):.1f}"
            if im.pneumonia == 1:
                findings["Lung Opacity"] = "1.0"
            view = "Frontal" if im.frontal else "Lateral"
            rows.append(
                [
                    f"{folder}/{im.path}",
                    im.sex,
                    im.age,
                    view,
                    im.ap_pa if im.frontal else "",
                    *findings.values(),
                ]
            )
        _write_csv(base / f"{split}.csv", header, rows)
    for number, im in enumerate(images):
        path = base / im.path
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = chest_pixels(
            image_size, int(im.pneumonia == 1), seed + number, render_size=max(32, image_size)
        )
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return root


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
    buffer = io.StringIO()
    csv.writer(buffer).writerows([PADCHEST_COLUMNS, *rows])
    if compressed:
        with gzip.open(root / f"{name}.gz", "wt", newline="") as handle:
            handle.write(buffer.getvalue())
    else:
        (root / name).write_text(buffer.getvalue())
    return root


def write_png16(path: str | os.PathLike, pixels: np.ndarray, bits: int = 12) -> np.ndarray:
    """A 16-bit grayscale PNG whose values use only the low ``bits`` bits, as PadChest's do (uint8 ``pixels``
    mapped onto an offset part of that range); returns the stored values."""
    top = (1 << bits) - 1
    stored = np.rint(top * 0.05 + pixels.astype(np.float64) / 255.0 * top * 0.9).astype(np.uint16)
    Image.fromarray(stored).save(path)
    return stored
