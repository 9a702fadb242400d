"""RSNA reader on pydicom-written fixtures in the challenge's layout, and on the real label and DICOM-header
tables that torchxrayvision ships."""

from __future__ import annotations

import importlib.metadata
import json
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.rsna import RSNA, parse_age
from cxrsyn.data.summary import summarize, verify
from cxrsyn.testing.datasets.common import write_dicom
from cxrsyn.testing.datasets.rsna import (
    RSNA_CLASSES_CSV,
    RSNA_IMAGES,
    RSNA_LABELS_CSV,
    RsnaPatient,
    rsna_patients,
    write_rsna_root,
)
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def patients() -> list[RsnaPatient]:
    people = rsna_patients(n_normal=7, n_opacity=5, n_not_normal=4, seed=11)
    # RSNA's quirks: plain-number ages, five impossible ones (148-155), several boxes per positive patient
    people[0] = replace(people[0], age="148", view="AP")
    people[1] = replace(people[1], age="51", view="PA")
    people[7] = replace(people[7], n_boxes=3)
    return people


@pytest.fixture(scope="module")
def rsna_root(tmp_path_factory, patients) -> Path:
    return write_rsna_root(tmp_path_factory.mktemp("rsna"), patients)


def index(root: Path, **settings):
    return RSNA(root=str(root), workers=1, show_progress=False, **settings).index()


def test_label_rows_are_unsorted_with_one_row_per_box(rsna_root, patients):
    rows = pd.read_csv(rsna_root / RSNA_LABELS_CSV)
    assert len(rows) == sum(max(1, p.n_boxes) for p in patients) > len(patients)
    assert not rows["patientId"].is_monotonic_increasing


def test_papers_selection_is_normal_vs_lung_opacity(rsna_root, patients):
    result = index(rsna_root)
    table = result.table
    assert len(table) == 12 and table["label"].sum() == 5  # 7 Normal + 5 Lung Opacity; 4 Not Normal left out
    assert table["patient"].is_unique
    assert set(table["detailed_class"]) == {"Normal", "Lung Opacity"}
    by_id = table.set_index("patient")
    assert by_id.loc[patients[7].patient_id, "n_boxes"] == 3
    assert result.found["patients"] == 16 and result.found["box_rows"] == sum(
        p.n_boxes for p in patients[7:12]
    )
    assert result.skipped == []
    assert "subset of NIH ChestX-ray14" in result.found["note"]  # never read rsna and nih as independent


def test_target_selection_keeps_every_patient(rsna_root):
    table = index(rsna_root, selection="target").table
    assert len(table) == 16 and table["label"].sum() == 5


def test_every_sample_carries_age_sex_and_view_and_impossible_ages_are_flagged(rsna_root, patients):
    result = index(rsna_root)
    by_id = result.table.set_index("patient")
    assert by_id.loc[patients[0].patient_id, "age"] == 148
    assert by_id.loc[patients[0].patient_id, "age_flag"] == "impossible"
    assert (
        by_id.loc[patients[1].patient_id, "age"] == 51 and by_id.loc[patients[1].patient_id, "age_flag"] == ""
    )
    assert set(result.table["sex"]) <= {"M", "F"} and set(result.table["view"]) <= {"PA", "AP"}
    assert result.found["age_flags"] == {patients[0].patient_id: "impossible (148)"}


def test_view_filter(rsna_root, patients):
    table = index(rsna_root, view="PA").table
    expected = {
        p.patient_id
        for p in patients
        if p.view == "PA" and p.detailed_class != "No Lung Opacity / Not Normal"
    }
    assert set(table["patient"]) == expected
    with pytest.raises(CxrsynError, match="data.view=\\['LAT'\\]"):
        index(rsna_root, view="LAT")


def test_headers_are_cached_between_reads(rsna_root, tmp_path):
    first = index(rsna_root, cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("rsna-headers-*.csv"))) == 1
    again = index(rsna_root, cache_dir=str(tmp_path))
    pd.testing.assert_frame_equal(first.table, again.table)


@pytest.mark.parametrize("age", ["51", "051Y", " 7 ", "6M", "148", "", "abc"])
def test_parse_age(age):
    expected = {"51": (51, ""), "051Y": (51, ""), " 7 ": (7, ""), "6M": (0, ""), "148": (148, "impossible")}
    assert parse_age(age) == expected.get(age, (None, "missing"))


def test_papers_selection_without_the_class_file_is_an_error(tmp_path, patients):
    root = write_rsna_root(tmp_path, patients[:4], with_classes=False)
    with pytest.raises(
        CxrsynError, match=f"needs {root / RSNA_CLASSES_CSV}, which is missing.*selection=target"
    ):
        index(root)
    assert len(index(root, selection="target").table) == 4


def test_wrong_columns_name_the_file(tmp_path, patients):
    root = write_rsna_root(tmp_path, patients[:3])
    (root / RSNA_LABELS_CSV).write_text("id,label\na,1\n")
    with pytest.raises(CxrsynError, match=f"{root / RSNA_LABELS_CSV} lacks column\\(s\\) patientId, Target"):
        index(root)


def test_missing_root_names_the_download_command(tmp_path):
    with pytest.raises(CxrsynError, match="python -m cxrsyn.data download rsna --root DIR"):
        index(tmp_path / "absent")


@pytest.fixture
def damaged_root(tmp_path, patients) -> tuple[Path, dict[str, str]]:
    """One patient without a file, one file without a label row, one empty file."""
    root = write_rsna_root(tmp_path / "rsna", patients[:12])
    images = root / RSNA_IMAGES
    (images / f"{patients[2].patient_id}.dcm").unlink()
    write_dicom(images / "not-in-labels.dcm", np.zeros((8, 8), np.uint8))
    (images / f"{patients[3].patient_id}.dcm").write_bytes(b"")
    reasons = {
        f"{RSNA_IMAGES}/{patients[2].patient_id}.dcm": "has no DICOM file",
        f"{RSNA_IMAGES}/not-in-labels.dcm": "no label row",
        f"{RSNA_IMAGES}/{patients[3].patient_id}.dcm": "empty file",
    }
    return root, reasons


def test_bad_files_stop_by_default_with_one_line(damaged_root):
    root, _ = damaged_root
    with pytest.raises(CxrsynError) as caught:
        index(root)
    message = str(caught.value)
    assert "\n" not in message and "on_bad_file=skip" in message and RSNA_IMAGES in message


def test_bad_files_are_listed_when_skipped(damaged_root):
    root, reasons = damaged_root
    result = index(root, on_bad_file="skip")
    listed = {item["path"]: item["reason"] for item in result.skipped}
    assert set(listed) == set(reasons)
    for path, reason in reasons.items():
        assert reason in listed[path]
    assert len(result.table) == 12 - 2


def test_summarize_cli_prints_counts_and_ends_with_json(rsna_root, tmp_path):
    result = run_cli(
        "cxrsyn.data",
        "summarize",
        "data=rsna",
        f"data.root={rsna_root}",
        f"paths.cache_dir={tmp_path}",
        "verify=true",
    )
    assert result.returncode == 1, result.stderr[-2000:]  # differs from the published counts: says so
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["dataset"], summary["n"], summary["n_pos"], summary["n_neg"]) == ("rsna", 12, 5, 7)
    assert summary["skipped"] == [] and summary["by_age_flag"]["impossible"]["n"] == 1
    assert "verify: all n is 12, published 14863" in result.stdout
    assert summary["verify"]["matches"] is False


# ------------------------------------------------------------------------------- real tables, shipped by torchxrayvision
def torchxrayvision_file(name: str) -> Path:
    """A data file of torchxrayvision, found without importing it (its import loads torchvision models)."""
    return Path(
        importlib.metadata.distribution("torchxrayvision").locate_file(f"torchxrayvision/data/{name}")
    )


@pytest.fixture(scope="module")
def real_tables_root(tmp_path_factory) -> tuple[Path, Path]:
    """The real stage_2_train_labels.csv beside 26,684 DICOM files (hard links to one tiny image: the pixels
    are not what is tested) and the real header table."""
    root = tmp_path_factory.mktemp("rsna_real")
    with zipfile.ZipFile(torchxrayvision_file("kaggle_stage_2_train_labels.csv.zip")) as bundle:
        (root / RSNA_LABELS_CSV).write_bytes(bundle.read(RSNA_LABELS_CSV))
    ids = pd.read_csv(root / RSNA_LABELS_CSV, usecols=["patientId"])["patientId"].unique()
    template = write_dicom(root / "template.dcm", np.zeros((8, 8), np.uint8))
    images = root / RSNA_IMAGES
    images.mkdir()
    for patient_id in ids:
        os.link(template, images / f"{patient_id}.dcm")
    return root, torchxrayvision_file("kaggle_stage_2_train_images_dicom_headers.csv.gz")


def test_real_rsna_tables(real_tables_root):
    root, headers = real_tables_root
    source = RSNA(root=str(root), selection="target", header_table=str(headers), show_progress=False)
    result = source.index()
    table = result.table
    assert result.skipped == []
    assert result.found["label_rows"] == 30227 and result.found["box_rows"] == 9555
    assert (len(table), int(table["label"].sum())) == (26684, 6012)
    assert table["sex"].value_counts().to_dict() == {"M": 15166, "F": 11518}
    assert table["view"].value_counts().to_dict() == {"PA": 14511, "AP": 12173}
    assert int(((table["label"] == 1) & (table["view"] == "AP")).sum()) == 4664
    flagged = table[table["age_flag"] == "impossible"]
    assert len(flagged) == 5 and flagged["age"].between(148, 155).all()
    assert verify(source, summarize(source, result))["matches"] is True
    with pytest.raises(CxrsynError, match="normal_vs_opacity .* needs .*stage_2_detailed_class_info.csv"):
        RSNA(root=str(root), header_table=str(headers)).index()
