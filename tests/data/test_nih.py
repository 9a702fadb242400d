"""NIH ChestX-ray14 reader on trees written in the Kaggle and NIH-box layouts, and on the real label tables
that torchxrayvision ships (Data_Entry_2017_v2020.csv.gz, google2019_nih-chest-xray-labels.csv.gz)."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.download import unpack
from cxrsyn.data.nih import NIH
from cxrsyn.data.summary import summarize, verify
from cxrsyn.testing.datasets.nih import NihImage, write_nih_root
from tests.conftest import run_cli
from tests.data.shipped_tables import link_images, torchxrayvision_file

IMAGES = [
    NihImage(1, 0, "Pneumonia", age="45", sex="F", view="AP", split="test", airspace_opacity="YES"),
    NihImage(1, 1, "Infiltration|Pneumonia", age="45", sex="F", view="AP", split="test"),
    NihImage(2, 0, "No Finding", age="30", airspace_opacity="NO", expert_set="validation"),
    NihImage(2, 1, "No Finding", age="31"),
    NihImage(3, 0, "Pneumothorax", age="62"),  # contains "Pneumo" but is not pneumonia
    NihImage(3, 1, "Consolidation|Effusion", age="62", airspace_opacity="YES", expert_set="validation"),
    NihImage(4, 0, "No Finding", sex="F", view="AP", split="test"),
    NihImage(5, 0, "Pneumonia|Edema", age="71"),
    NihImage(6, 0, "No Finding", age="12"),
    NihImage(7, 2, "Effusion"),
    NihImage(8, 0, "No Finding", age="148"),  # Data_Entry_2017.csv (before the 2020 revision) had such ages
]
POSITIVES = {"00000001_000.png", "00000001_001.png", "00000005_000.png"}
NEGATIVES = {
    "00000002_000.png",
    "00000002_001.png",
    "00000004_000.png",
    "00000006_000.png",
    "00000008_000.png",
}


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory) -> Path:
    return write_nih_root(tmp_path_factory.mktemp("nih"), IMAGES)


def index(root: Path, **settings):
    return NIH(root=str(root), show_progress=False, **settings).index()


def test_pneumonia_vs_no_finding(nih_root):
    result = index(nih_root)
    table = result.table.assign(name=lambda t: t["path"].str.rsplit("/", n=1).str[-1])
    assert dict(zip(table["name"], table["label"], strict=True)) == {
        **dict.fromkeys(POSITIVES, 1),
        **dict.fromkeys(NEGATIVES, 0),
    }
    assert table["path"].str.match(r"^images_0(0[1-9]|1[0-2])/images/\d{8}_\d{3}\.png$").all()
    assert result.skipped == [] and result.found["left_out_other_findings"] == 3
    assert "subset of NIH" in result.found["note"] and "not independent" in result.found["note"]
    first = table.set_index("name").loc["00000001_001.png"]
    assert (first["patient"], first["follow_up"], first["age"], first["sex"], first["view"]) == (
        "00000001",
        1,
        45,
        "F",
        "AP",
    )
    assert (first["findings"], first["split"], first["age_band"]) == (
        "Infiltration|Pneumonia",
        "test",
        "40-64",
    )
    assert set(table["patient"]) == {"00000001", "00000002", "00000004", "00000005", "00000006", "00000008"}


def test_official_split_and_view_filters(nih_root, tmp_path):
    test = index(nih_root, split="test").table
    assert (len(test), int(test["label"].sum())) == (3, 2) and set(test["split"]) == {"test"}
    assert len(index(nih_root, split="train_val").table) == 5
    pa = index(nih_root, view="PA").table
    assert set(pa["view"]) == {"PA"} and len(pa) == 5
    with pytest.raises(CxrsynError, match="data.split='holdout' for NIH"):
        index(nih_root, split="holdout")
    root = write_nih_root(tmp_path, IMAGES[:4], split_lists=False)
    assert set(index(root).table["split"]) == {""}
    with pytest.raises(CxrsynError, match="data.split=test needs .*test_list.txt, which is missing"):
        index(root, split="test")


def test_nih_box_layout_with_the_2017_table(tmp_path):
    root = write_nih_root(tmp_path, IMAGES, layout="nih_box", label_file="Data_Entry_2017.csv")
    result = index(root)
    assert result.found["label_file"] == "Data_Entry_2017.csv" and len(result.table) == 8
    assert result.table["path"].str.startswith("images/").all()
    flagged = result.table[result.table["age_flag"] != ""]
    assert flagged[["patient", "age", "age_flag", "age_band"]].values.tolist() == [
        ["00000008", 148, "impossible", "unknown"]
    ]
    assert result.found["age_flags"] == {"00000008_000.png": "impossible (148)"}


def test_the_2020_table_may_name_the_column_patient_sex(tmp_path):
    root = write_nih_root(tmp_path, IMAGES, sex_column="Patient Sex")
    table = index(root).table
    assert table.set_index("patient").loc["00000004", "sex"] == "F"


@pytest.mark.parametrize("expert_files", ["google_cloud", "torchxrayvision"])
def test_airspace_opacity_expert(tmp_path, expert_files):
    root = write_nih_root(tmp_path, IMAGES, expert_files=expert_files)
    table = index(root, selection="airspace_opacity_expert").table
    names = table["path"].str.rsplit("/", n=1).str[-1]
    assert dict(zip(names, table["label"], strict=True)) == {
        "00000001_000.png": 1,
        "00000002_000.png": 0,
        "00000003_001.png": 1,
    }
    expected_set = "validation" if expert_files == "google_cloud" else "val"
    assert table.set_index(names)["expert_set"].to_dict() == {
        "00000001_000.png": "test",
        "00000002_000.png": expected_set,
        "00000003_001.png": expected_set,
    }


def test_expert_selection_without_the_labels_says_where_to_get_them(tmp_path):
    root = write_nih_root(tmp_path, IMAGES[:3], expert_files="none")
    with pytest.raises(CxrsynError, match="needs Google's expert labels.*four_findings_expert_labels"):
        index(root, selection="airspace_opacity_expert")


@pytest.fixture
def damaged_root(tmp_path) -> tuple[Path, dict[str, str]]:
    """A selected image without its file, an empty file and a file that is not a PNG."""
    root = write_nih_root(tmp_path / "nih", IMAGES)
    paths = {p.name: p for p in root.glob("images_*/images/*.png")}
    paths["00000002_000.png"].unlink()
    paths["00000004_000.png"].write_bytes(b"")
    paths["00000005_000.png"].write_text("<html>download interrupted</html>")
    reasons = {
        "00000002_000.png": "image file is missing",
        "00000004_000.png": "empty",
        "00000005_000.png": "not a readable image",
    }
    return root, reasons


def test_bad_files_stop_by_default_with_one_line(damaged_root):
    root, _ = damaged_root
    with pytest.raises(CxrsynError) as caught:
        index(root)
    assert "\n" not in str(caught.value) and "on_bad_file=skip for NIH" in str(caught.value)


def test_bad_files_are_listed_when_skipped(damaged_root):
    root, reasons = damaged_root
    result = index(root, on_bad_file="skip")
    listed = {Path(item["path"]).name: item["reason"] for item in result.skipped}
    assert set(listed) == set(reasons)
    for name, reason in reasons.items():
        assert reason in listed[name]
    assert len(result.table) == 8 - 3


def test_wrong_columns_and_missing_root(tmp_path):
    root = write_nih_root(tmp_path / "nih", IMAGES[:2])
    (root / "Data_Entry_2017_v2020.csv").write_text("Image,Label\n00000001_000.png,Pneumonia\n")
    with pytest.raises(
        CxrsynError, match=r"Data_Entry_2017_v2020.csv lacks column\(s\) Image Index, Finding"
    ):
        index(root)
    (root / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(CxrsynError, match="has no Data_Entry_2017_v2020.csv or Data_Entry_2017.csv"):
        index(root)
    with pytest.raises(CxrsynError, match="download nih --root DIR"):
        index(tmp_path / "absent")


def test_unpacked_kaggle_zip_reads_as_downloaded(nih_root, tmp_path):
    """Kaggle's nih-chest-xrays/data zip: Data_Entry_2017.csv, the lists, images_001/images/... and PDFs."""
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(nih_root.rglob("*")):
            if path.is_file() and path.name != "Data_Entry_2017_v2020.csv":
                bundle.write(path, path.relative_to(nih_root))
        bundle.write(nih_root / "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
        bundle.writestr("README_CHESTXRAY.pdf", b"%PDF-1.4")
    unpack(archive, tmp_path / "nih")
    result = index(tmp_path / "nih")
    assert result.found["label_file"] == "Data_Entry_2017.csv" and len(result.table) == 8


def test_rgba_pngs_decode_to_grayscale(nih_root):
    table = index(nih_root).table
    modes = {Image.open(file).mode for file in table["file"]}
    assert modes == {"L", "RGBA"}
    for file in table["file"]:
        image = decode_resized(file, Preprocessing(image_size=32))
        assert image.shape == (32, 32) and 0 < image.mean() < 255


# ------------------------------------------------------------------------- the real tables, every selected file
@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> Path:
    """The shipped Data_Entry table and Google's labels, with a hard link at every image either selection
    needs (the selection is recomputed here from the raw rows, independently of the reader)."""
    root = tmp_path_factory.mktemp("nih_real")
    with gzip.open(torchxrayvision_file("Data_Entry_2017_v2020.csv.gz")) as packed:
        (root / "Data_Entry_2017_v2020.csv").write_bytes(packed.read())
    shutil.copy(torchxrayvision_file("google2019_nih-chest-xray-labels.csv.gz"), root)
    entries = pd.read_csv(root / "Data_Entry_2017_v2020.csv")
    expert = pd.read_csv(root / "google2019_nih-chest-xray-labels.csv.gz")
    wanted = entries["Finding Labels"].map(
        lambda text: "Pneumonia" in text.split("|") or text == "No Finding"
    )
    names = sorted(set(entries.loc[wanted, "Image Index"]) | set(expert["Image Index"]))
    template = root / "template.png"
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(template)
    per_folder = -(-len(names) // 12)
    targets = [root / f"images_{1 + i // per_folder:03d}" / "images" / name for i, name in enumerate(names)]
    assert link_images(template, targets) == len(names)
    template.unlink()
    return root


def test_real_table_gives_the_published_counts(real_root):
    source = NIH(root=str(real_root), show_progress=False)
    result = source.index()
    table = result.table
    assert result.skipped == [] and result.found["label_rows"] == 112120 and result.found["patients"] == 30805
    assert (len(table), int(table["label"].sum())) == (1431 + 60361, 1431)
    assert table.loc[table["label"] == 1, "patient"].nunique() == 1008
    assert result.found["finding_labels"]["Pneumonia"] == 1431
    assert result.found["finding_labels"]["No Finding"] == 60361
    assert set(table["view"]) == {"PA", "AP"} and set(table["sex"]) == {"M", "F"}
    assert (table["age_flag"] == "").all()  # the 2020 revision corrected the impossible ages
    assert verify(source, summarize(source, result))["matches"] is True


def test_real_expert_labels(real_root):
    source = NIH(root=str(real_root), selection="airspace_opacity_expert", show_progress=False)
    result = source.index()
    raw = pd.read_csv(torchxrayvision_file("google2019_nih-chest-xray-labels.csv.gz"))
    assert (len(result.table), int(result.table["label"].sum())) == (4376, 2166)
    assert int((raw["Airspace opacity"] == "YES").sum()) == 2166
    assert result.table["expert_set"].value_counts().to_dict() == {"val": 2414, "test": 1962}
    assert verify(source, summarize(source, result))["matches"] is True


def test_real_table_summarize_cli_verifies(real_root, tmp_path):
    out = tmp_path / "summary.json"
    result = run_cli(
        "cxrsyn.data", "summarize", "data=nih", f"data.root={real_root}", "verify=true", f"summary_file={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["n"], summary["n_pos"], summary["n_neg"], summary["skipped"]) == (61792, 1431, 60361, [])
    assert summary["verify"]["matches"] is True and json.loads(out.read_text())["n"] == 61792
    assert "subset of NIH" in summary["found"]["note"] and summary["by_view"]["AP"]["n"] > 0
    assert (
        "verify: matches the published counts (NIH ChestX-ray14 selection pneumonia_vs_no_finding)"
        in result.stdout
    )
