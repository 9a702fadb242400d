"""Download: the credentials message (no network needed to reach it) and unpacking to the readers' layout.

The RSNA archive is written from the names Kaggle ships (study.md section 2), not from the reader's constants,
and the reader must index what was unpacked."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.download import download, unpack
from cxrsyn.data.kermany import Kermany
from cxrsyn.data.rsna import RSNA
from cxrsyn.testing.datasets.common import chest_pixels, write_dicom
from cxrsyn.testing.datasets.kermany import write_kermany_root
from cxrsyn.testing.datasets.rsna import rsna_patients, write_rsna_root
from tests.conftest import run_cli


def zip_tree(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder))
    return archive


def test_missing_kaggle_credentials_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env.update(HOME=str(tmp_path), KAGGLE_CONFIG_DIR=str(tmp_path / ".kaggle"))
    result = run_cli("cxrsyn.data", "download", "rsna", "--root", str(tmp_path / "rsna"), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Kaggle credentials" in lines[0], result.stderr
    # the current ways first (kaggle >= 1.8: an API token; kaggle >= 2.2: kaggle auth login), the legacy file last
    line = lines[0]
    assert line.index("KAGGLE_API_TOKEN") < line.index("~/.kaggle/access_token") < line.index("kaggle.json")
    assert "kaggle auth login" in line and "https://www.kaggle.com/settings/api" in line


def test_a_403_says_the_rules_must_be_accepted_and_the_phone_verified(tmp_path, monkeypatch):
    class Refusing:
        def competition_download_files(self, competition: str, path: str, quiet: bool = True) -> None:
            raise RuntimeError(
                "403 Client Error: Forbidden for url: https://www.kaggle.com/api/v1/competitions"
            )

    monkeypatch.setattr("cxrsyn.data.download._authenticated_api", lambda: Refusing())
    with pytest.raises(CxrsynError) as raised:
        download("rsna", tmp_path / "rsna")
    message = str(raised.value)
    assert "\n" not in message and "(403)" in message
    assert (
        "accept the competition rules at https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/rules"
        in message
    )
    assert "verify your account by phone" in message


def test_unpacked_kaggle_zip_reads_as_downloaded(tmp_path):
    tree = write_kermany_root(tmp_path / "made", {"train": (2, 3), "val": (1, 1), "test": (1, 2)})
    archive = zip_tree(tree, tmp_path / "chest-xray-pneumonia.zip")
    root = tmp_path / "kermany"
    unpack(archive, root)
    assert not (root / "__MACOSX").exists()
    result = Kermany(root=str(root)).index()
    assert len(result.table) == 10 and result.found["duplicate_trees_ignored"] == ["chest_xray/chest_xray"]


def test_unpacked_competition_zip_with_inner_zips(tmp_path):
    made = write_rsna_root(tmp_path / "made", rsna_patients(2, 2, 1))
    inner = zip_tree(made / "stage_2_train_images", tmp_path / "stage_2_train_images.zip")
    archive = tmp_path / "rsna-pneumonia-detection-challenge.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
            bundle.write(made / name, name)
        bundle.writestr("stage_2_train_images.zip", inner.read_bytes())
    root = tmp_path / "rsna"
    unpack(archive, root)
    # the inner zip holds the folder's files by their bare names: they belong in stage_2_train_images/
    assert len(list((root / "stage_2_train_images").glob("*.dcm"))) == 5 and not list(root.rglob("*.zip"))
    table = RSNA(root=str(root), workers=1, show_progress=False).index().table
    assert (
        len(table) == 4 and int(table["label"].sum()) == 2
    )  # Normal vs Lung Opacity; the 'Not Normal' left out


RSNA_PATIENTS = [  # (patientId, class, boxes): made-up ids in RSNA's uuid form
    ("0004cfab-14fd-4e49-80ba-63a80b6bddd6", "No Lung Opacity / Not Normal", 0),
    ("00313ee0-9eaa-42f4-b0ab-c148ed3241cd", "Normal", 0),
    ("00322d4d-1c29-4943-afc9-b6754be640eb", "Lung Opacity", 2),
    ("003d8fa0-6bf1-40ed-b54c-ac657f8495c5", "Normal", 0),
    ("00436515-870c-4b36-a041-de91049b9ab4", "Lung Opacity", 1),
    ("00569f44-917d-4c86-a842-81832af98c30", "Normal", 0),
]
RSNA_TEST_IDS = ["000db696-cf54-4385-b10b-6b16fbb3f985", "000fe35a-2649-43d4-b027-e67796d412e0"]


def kaggle_rsna_zip(tmp_path: Path) -> Path:
    """rsna-pneumonia-detection-challenge.zip laid out as Kaggle ships the competition: both label CSVs, the
    sample submission, the credits note, stage_2_train_images/<patientId>.dcm and stage_2_test_images/."""
    archive = tmp_path / "download" / "rsna-pneumonia-detection-challenge.zip"
    archive.parent.mkdir()
    labels, classes = ["patientId,x,y,width,height,Target"], ["patientId,class"]
    for patient_id, detailed_class, boxes in RSNA_PATIENTS:
        for box in range(max(1, boxes)):
            labels.append(f"{patient_id},{264 + box},{152},{213},{379},1" if boxes else f"{patient_id},,,,,0")
            classes.append(f"{patient_id},{detailed_class}")
    dicoms = tmp_path / "dicoms"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("GCP Credits Request Link - RSNA.txt", "https://example.org/credits\n")
        bundle.writestr("stage_2_detailed_class_info.csv", "\n".join(classes) + "\n")
        bundle.writestr(
            "stage_2_sample_submission.csv",
            "patientId,PredictionString\n" + "".join(f"{i},\n" for i in RSNA_TEST_IDS),
        )
        bundle.writestr("stage_2_train_labels.csv", "\n".join(labels) + "\n")
        for folder, ids in (
            ("stage_2_test_images", RSNA_TEST_IDS),
            ("stage_2_train_images", [patient[0] for patient in RSNA_PATIENTS]),
        ):
            bundle.writestr(f"{folder}/", "")
            for number, patient_id in enumerate(ids):
                label = int(folder == "stage_2_train_images" and RSNA_PATIENTS[number][1] == "Lung Opacity")
                dicom = write_dicom(
                    dicoms / f"{patient_id}.dcm",
                    chest_pixels(64, label, number),
                    patient_id=patient_id,
                    age=str(30 + number),
                    sex="MF"[number % 2],
                    view="AP" if label else "PA",
                )
                bundle.write(dicom, f"{folder}/{patient_id}.dcm")
    return archive


class FakeKaggle:
    """Kaggle's side of ``KaggleApi.competition_download_files``: the archive lands in ``path``."""

    def __init__(self, archive: Path):
        self.archive = archive
        self.calls: list[str] = []

    def competition_download_files(self, competition: str, path: str, quiet: bool = True) -> None:
        self.calls.append(competition)
        shutil.copy(self.archive, Path(path) / f"{competition}.zip")


def test_rsna_download_unpacks_kaggles_layout_and_the_reader_indexes_it(tmp_path, monkeypatch):
    kaggle = FakeKaggle(kaggle_rsna_zip(tmp_path))
    monkeypatch.setattr("cxrsyn.data.download._authenticated_api", lambda: kaggle)
    root = tmp_path / "rsna"
    download("rsna", root)
    assert kaggle.calls == ["rsna-pneumonia-detection-challenge"] and not list(root.glob("*.zip"))
    assert (root / "GCP Credits Request Link - RSNA.txt").is_file()
    assert sorted(path.stem for path in (root / "stage_2_test_images").glob("*.dcm")) == RSNA_TEST_IDS
    result = RSNA(root=str(root), workers=1, show_progress=False).index()
    table = result.table.set_index("patient")
    selected = {pid: cls for pid, cls, _ in RSNA_PATIENTS if cls != "No Lung Opacity / Not Normal"}
    assert sorted(table.index) == sorted(selected) and result.skipped == []
    assert table["label"].to_dict() == {pid: int(cls == "Lung Opacity") for pid, cls in selected.items()}
    assert table.loc["00322d4d-1c29-4943-afc9-b6754be640eb", "n_boxes"] == 2
    assert result.found["image_files"] == len(RSNA_PATIENTS)  # the test images are not training images
    everything = RSNA(root=str(root), selection="target", workers=1, show_progress=False).index().table
    assert len(everything) == len(RSNA_PATIENTS)


def test_unpack_refuses_paths_outside_the_root(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escape.txt", "x")
    with pytest.raises(CxrsynError, match="outside"):
        unpack(archive, tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists()


def test_truncated_zip_is_a_clear_error(tmp_path):
    archive = zip_tree(write_kermany_root(tmp_path / "m", {"test": (1, 1)}, quirks=False), tmp_path / "a.zip")
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(CxrsynError, match="not a complete zip file; delete it and download again"):
        unpack(archive, tmp_path / "r")
    assert RSNA  # the reader the RSNA download feeds is tested in test_rsna.py
