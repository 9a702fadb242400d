"""CheXpert reader on trees written as Stanford ships them, and on the real train.csv that torchxrayvision
ships (chexpert_train.csv.gz, CheXpert-v1.0-small)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.chexpert import CheXpert
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.summary import summarize, verify
from cxrsyn.testing.datasets.chexpert import CheXpertImage, write_chexpert_root
from tests.data.shipped_tables import link_images, torchxrayvision_file

IMAGES = [
    CheXpertImage(1, pneumonia=1, ap_pa="AP", sex="Male", age=70),
    CheXpertImage(1, view_number=2, frontal=False, pneumonia=1, sex="Male", age=70),  # lateral
    CheXpertImage(2, pneumonia=-1, ap_pa="AP"),  # uncertain
    CheXpertImage(3, no_finding=1, ap_pa="PA", sex="Female", age=34),
    CheXpertImage(3, study=2, no_finding=1, ap_pa="PA", sex="Female", age=35),
    CheXpertImage(4, pneumonia=0),  # "no pneumonia" on a film with other findings: not normal
    CheXpertImage(5),  # no label at all
    CheXpertImage(6, pneumonia=-1, ap_pa="PA", sex="Unknown", age=0),  # uncertain; 0 = unknown age
    CheXpertImage(7, no_finding=1, pneumonia=0, ap_pa="LL"),  # one of the frontal images labelled LL
    CheXpertImage(64541, no_finding=1, split="valid"),
    CheXpertImage(64542, pneumonia=1, split="valid"),
]


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory) -> Path:
    return write_chexpert_root(tmp_path_factory.mktemp("chexpert"), IMAGES)


def index(root: Path, **settings):
    return CheXpert(root=str(root), show_progress=False, **settings).index()


def labels_by_patient(table: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {
        (p, s): int(label) for p, s, label in table[["patient", "study", "label"]].itertuples(index=False)
    }


@pytest.mark.parametrize(
    ("uncertain", "expected"),
    [
        ("exclude", {1: 1, 3: 0, 7: 0, 64541: 0, 64542: 1}),
        ("positive", {1: 1, 2: 1, 3: 0, 6: 1, 7: 0, 64541: 0, 64542: 1}),
        ("negative", {1: 1, 2: 0, 3: 0, 6: 0, 7: 0, 64541: 0, 64542: 1}),
    ],
)
def test_uncertain_policies(chexpert_root, uncertain, expected):
    result = index(chexpert_root, uncertain=uncertain)
    table = result.table
    by_patient = table.groupby("patient")["label"].agg(lambda labels: int(labels.iloc[0])).to_dict()
    assert by_patient == {f"patient{p:05d}": label for p, label in expected.items()}
    assert len(table) == len(expected) + 1  # patient 3 has two studies
    assert result.found["uncertain"]["policy"] == uncertain
    assert result.found["uncertain"]["images_with_pneumonia_-1"] == 2
    assert set(table.loc[table["patient"].isin(["patient00002", "patient00006"]), "pneumonia_label"]) <= {
        "uncertain"
    }
    assert result.skipped == []


def test_attributes(chexpert_root):
    table = index(chexpert_root).table.set_index(["patient", "study"])
    assert table.loc[("patient00001", "study1"), ["age", "sex", "view", "split"]].tolist() == [
        70,
        "M",
        "AP",
        "train",
    ]
    assert table.loc[("patient00003", "study2"), ["age", "age_band", "sex", "view"]].tolist() == [
        35,
        "18-39",
        "F",
        "PA",
    ]
    assert table.loc[("patient00007", "study1"), "view"] == "LL"
    assert table.loc[("patient64542", "study1"), ["split", "pneumonia_label"]].tolist() == [
        "valid",
        "positive",
    ]
    unknown = index(chexpert_root, uncertain="positive").table.set_index("patient").loc["patient00006"]
    assert (unknown["sex"], unknown["age_flag"], unknown["age_band"]) == ("", "missing", "unknown")
    paths = index(chexpert_root).table["path"]
    assert paths.str.match(
        r"^CheXpert-v1.0-small/(train|valid)/patient\d{5}/study\d/view\d_frontal.jpg$"
    ).all()


def test_frontal_only_split_and_view(chexpert_root):
    lateral = index(chexpert_root, frontal_only=False).table
    assert len(lateral) == 7 and lateral.loc[lateral["path"].str.contains("lateral"), "view"].tolist() == [
        "LATERAL"
    ]
    train = index(chexpert_root, split="train").table
    assert (len(train), int(train["label"].sum()), set(train["split"])) == (4, 1, {"train"})
    assert len(index(chexpert_root, split="valid").table) == 2
    pa = index(chexpert_root, view="PA").table
    assert set(pa["patient"]) == {"patient00003"}
    with pytest.raises(CxrsynError, match="data.uncertain='maybe' for CheXpert"):
        index(chexpert_root, uncertain="maybe")
    with pytest.raises(CxrsynError, match="data.view=.*LATERAL.*use one or a list of AP, PA, LL, RL"):
        index(chexpert_root, view="LATERAL")


def test_root_may_be_the_csv_folder_or_the_one_above(tmp_path):
    root = write_chexpert_root(tmp_path / "full", IMAGES[:5], folder="CheXpert-v1.0")
    above, inside = index(root), index(root / "CheXpert-v1.0")
    assert len(above.table) == len(inside.table) == 3
    assert above.found["folder"] == "CheXpert-v1.0" and inside.found["folder"] == "."
    assert inside.table["path"].str.startswith("train/").all()
    with pytest.raises(CxrsynError, match=r"valid.csv is missing"):
        index(root, split="valid")
    write_chexpert_root(root, IMAGES[:2], folder="CheXpert-v1.0-small")
    with pytest.raises(CxrsynError, match="several CheXpert folders.*point data.root"):
        index(root)


@pytest.fixture
def damaged_root(tmp_path) -> tuple[Path, dict[str, str]]:
    root = write_chexpert_root(tmp_path / "chexpert", IMAGES)
    base = root / "CheXpert-v1.0-small"
    (base / IMAGES[0].path).unlink()
    (base / IMAGES[3].path).write_bytes(b"")
    (base / IMAGES[4].path).write_bytes(b"GIF89a not what the name says")
    reasons = {
        IMAGES[0].path: "image file is missing",
        IMAGES[3].path: "empty",
        IMAGES[4].path: "not a readable image",
    }
    return root, reasons


def test_bad_files_follow_the_policy(damaged_root):
    root, reasons = damaged_root
    with pytest.raises(CxrsynError) as caught:
        index(root)
    assert "\n" not in str(caught.value) and "on_bad_file=skip for CheXpert" in str(caught.value)
    result = index(root, on_bad_file="skip")
    listed = {item["path"].removeprefix("CheXpert-v1.0-small/"): item["reason"] for item in result.skipped}
    assert set(listed) == set(reasons)
    for path, reason in reasons.items():
        assert reason in listed[path]
    assert len(result.table) == 6 - 3


def test_wrong_columns_bad_values_and_missing_root(tmp_path):
    root = write_chexpert_root(tmp_path / "c", IMAGES[:4])
    csv_file = root / "CheXpert-v1.0-small" / "train.csv"
    text = csv_file.read_text()
    csv_file.write_text(text.replace("Pneumonia", "Pneumonitis"))
    with pytest.raises(
        CxrsynError, match=r"train.csv lacks column\(s\) Pneumonia .*not the CheXpert label table"
    ):
        index(root)
    rows = pd.read_csv(tmp_path / "c" / "CheXpert-v1.0-small" / "train.csv").rename(
        columns={"Pneumonitis": "Pneumonia"}
    )
    rows.loc[2, "Pneumonia"] = 2.0
    rows.to_csv(csv_file, index=False)
    with pytest.raises(CxrsynError, match=r"train.csv line 4: Pneumonia must be 1, 0, -1 or blank"):
        index(root)
    with pytest.raises(CxrsynError, match="no train.csv or valid.csv in"):
        index(tmp_path)
    with pytest.raises(CxrsynError, match="CheXpert root .* does not exist: get CheXpert from Stanford AIMI"):
        index(tmp_path / "absent")


def test_images_decode(chexpert_root):
    for file in index(chexpert_root).table["file"]:
        image = decode_resized(file, Preprocessing(image_size=32))
        assert image.shape == (32, 32) and 0 < image.mean() < 255


# ---------------------------------------------------------------------------------------- the real train.csv
@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The shipped train.csv in CheXpert-v1.0-small/, with a hard link at every frontal image labelled
    Pneumonia 1 or -1 or No Finding 1 (every image any uncertain policy selects)."""
    root = tmp_path_factory.mktemp("chexpert_real")
    base = root / "CheXpert-v1.0-small"
    base.mkdir()
    with gzip.open(torchxrayvision_file("chexpert_train.csv.gz")) as packed:
        (base / "train.csv").write_bytes(packed.read())
    rows = pd.read_csv(base / "train.csv")
    frontal = rows[rows["Frontal/Lateral"] == "Frontal"]
    needed = frontal[frontal["Pneumonia"].isin([1, -1]) | (frontal["No Finding"] == 1)]
    template = root / "template.jpg"
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(template)
    assert link_images(template, (root / path for path in needed["Path"])) == len(needed) == 37630
    template.unlink()
    return root, frontal


@pytest.mark.parametrize("uncertain", ["exclude", "positive", "negative"])
def test_real_table_counts(real_root, uncertain):
    root, frontal = real_root
    source = CheXpert(root=str(root), uncertain=uncertain, show_progress=False)
    result = source.index()
    table = result.table
    # the reference, from the raw rows: Pneumonia 1 / -1 and No Finding 1 never coincide in this table
    positives, uncertains = int((frontal["Pneumonia"] == 1).sum()), int((frontal["Pneumonia"] == -1).sum())
    normals = int((frontal["No Finding"] == 1).sum())
    assert (positives, uncertains, normals) == (4675, 15981, 16974)
    expected = {
        "exclude": (positives, normals),
        "positive": (positives + uncertains, normals),
        "negative": (positives, normals + uncertains),
    }[uncertain]
    assert (int(table["label"].sum()), int((table["label"] == 0).sum())) == expected
    assert result.skipped == [] and result.found["train_rows"] == 223414
    summary = summarize(source, result)
    check = verify(source, summary)
    assert check["matches"] is True and "train.csv" in check["reference"]
    assert summary["splits"] == {"train": {"n": sum(expected), "n_pos": expected[0], "n_neg": expected[1]}}
    assert table["patient"].str.match(r"^patient\d{5}$").all() and set(table["sex"]) <= {"M", "F", ""}
