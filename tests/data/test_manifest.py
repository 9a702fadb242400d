from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest, write_manifest


def make_folder(root: Path, rows: list[dict]) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(root / row["path"])
    write_manifest(root, rows)
    return root


def test_round_trip_keeps_rows_and_attributes(tmp_path):
    rows = [
        {"path": "images/a.png", "label": 1, "sex": "F"},
        {"path": "images/b.png", "label": 0, "sex": "M"},
    ]
    table = read_manifest(make_folder(tmp_path, rows))
    assert table["path"].tolist() == ["images/a.png", "images/b.png"]
    assert table["label"].tolist() == [1, 0]
    assert table["sex"].tolist() == ["F", "M"]
    assert list(table.columns[:2]) == ["path", "label"]


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(CxrsynError, match=r"dataset folder .*nowhere does not exist"):
        read_manifest(tmp_path / "nowhere")


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(CxrsynError, match=r"manifest.csv is missing"):
        read_manifest(tmp_path)


def test_missing_columns_are_listed(tmp_path):
    pd.DataFrame({"file": ["a.png"], "target": [1]}).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(CxrsynError, match=r"lacks required column\(s\) path, label; found file, target"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("bad", ["2", "yes", "-1", "0.5"])
def test_labels_other_than_0_1_are_rejected_with_line(tmp_path, bad):
    (tmp_path / "manifest.csv").write_text(f"path,label\nimages/a.png,1\nimages/b.png,{bad}\n")
    with pytest.raises(
        CxrsynError, match=rf"line 3: label must be 0 \(normal\) or 1 \(pneumonia\), found {bad}"
    ):
        read_manifest(tmp_path)


def test_empty_label_is_rejected(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\nimages/a.png,\n")
    with pytest.raises(CxrsynError, match=r"line 2: label must be 0"):
        read_manifest(tmp_path)


def test_duplicate_paths_are_rejected(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\nimages/a.png,1\nimages/a.png,0\n")
    with pytest.raises(CxrsynError, match=r"lines 2 and 3 list one file .* different labels"):
        read_manifest(tmp_path)


def test_empty_manifest_is_rejected(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\n")
    with pytest.raises(CxrsynError, match=r"has no rows"):
        read_manifest(tmp_path)


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    write_manifest(tmp_path, [{"path": "images/a.png", "label": 1}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]
