"""Kermany reader on trees written in the Kaggle and Mendeley layouts, with every quirk of the download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.kermany import Kermany
from cxrsyn.data.summary import summarize, verify
from cxrsyn.testing.datasets.kermany import write_kermany_root
from tests.conftest import run_cli

COUNTS = {"train": (4, 6), "val": (1, 1), "test": (2, 3)}  # (normal, pneumonia) per split: 17 images


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory) -> Path:
    return write_kermany_root(tmp_path_factory.mktemp("kermany"), COUNTS, layout="kaggle")


def test_kaggle_zip_quirks_count_every_image_once(kaggle_root):
    on_disk = [p for p in kaggle_root.rglob("*.jpeg")]
    assert len(on_disk) == 3 * 17  # the tree, its duplicate and the __MACOSX forks: a naive scan triples
    result = Kermany(root=str(kaggle_root)).index()
    table = result.table
    assert (len(table), int(table["label"].sum())) == (17, 10)
    assert (
        table["path"].is_unique and not table["path"].str.contains("__MACOSX|/chest_xray/chest_xray/").any()
    )
    assert result.found["duplicate_trees_ignored"] == ["chest_xray/chest_xray"]
    assert (
        result.found["ignored_files"]["macosx_entries"] == 17
        and result.found["ignored_files"]["ds_store"] >= 1
    )
    assert result.skipped == []


def test_split_and_subtype_travel_with_samples(kaggle_root):
    table = Kermany(root=str(kaggle_root)).index().table
    assert table.groupby("split")["label"].agg(["size", "sum"]).to_dict("index") == {
        "test": {"size": 5, "sum": 3},
        "train": {"size": 10, "sum": 6},
        "val": {"size": 2, "sum": 1},
    }
    assert set(table.loc[table["label"] == 0, "subtype"]) == {"normal"}
    assert set(table.loc[table["label"] == 1, "subtype"]) == {"bacteria", "virus"}


def test_selection_by_split(kaggle_root):
    assert len(Kermany(root=str(kaggle_root), selection="test").index().table) == 5
    assert len(Kermany(root=str(kaggle_root), selection=["train", "val"]).index().table) == 12
    with pytest.raises(CxrsynError, match="use all, or splits from train, val, test"):
        Kermany(root=str(kaggle_root), selection="holdout").index()


def test_root_may_be_the_inner_folder(kaggle_root):
    result = Kermany(root=str(kaggle_root / "chest_xray")).index()
    assert len(result.table) == 17 and result.found["tree"] == "."


@pytest.mark.parametrize("layout", ["mendeley_v2", "mendeley_v3"])
def test_mendeley_layouts(tmp_path, layout):
    root = write_kermany_root(tmp_path, {"train": (2, 3), "test": (1, 2)}, layout=layout)
    table = Kermany(root=str(root)).index().table
    assert (len(table), int(table["label"].sum())) == (8, 5)
    assert set(table["subtype"]) == {"normal", "bacteria", "virus"}
    if layout == "mendeley_v3":
        assert table["path"].str.startswith("CellData/chest_xray/").all()


def test_rgb_and_grayscale_jpegs_both_decode(kaggle_root):
    table = Kermany(root=str(kaggle_root)).index().table
    modes = {Image.open(file).mode for file in table["file"]}
    assert modes == {"L", "RGB"}
    for file in table["file"]:
        image = decode_resized(file, Preprocessing(image_size=32))
        assert image.shape == (32, 32) and image.dtype == np.uint8 and image.max() > 0


def test_different_trees_are_an_error(tmp_path):
    root = write_kermany_root(tmp_path, {"train": (2, 2)}, quirks=False)
    other = write_kermany_root(tmp_path / "other", {"test": (1, 1)}, quirks=False, seed=9)
    assert other.exists()
    with pytest.raises(CxrsynError, match="several Kermany trees with different images.*point data.root"):
        Kermany(root=str(root)).index()


def test_no_tree_and_missing_root(tmp_path):
    with pytest.raises(CxrsynError, match="no Kermany tree under"):
        Kermany(root=str(tmp_path)).index()
    with pytest.raises(CxrsynError, match="download kermany --root DIR"):
        Kermany(root=str(tmp_path / "absent")).index()


def test_zero_byte_and_unreadable_files_follow_the_policy(tmp_path):
    root = write_kermany_root(tmp_path, {"test": (3, 3)}, quirks=False)
    files = sorted((root / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))
    files[0].write_bytes(b"")
    files[1].write_bytes(b"not a jpeg at all")
    with pytest.raises(CxrsynError) as caught:
        Kermany(root=str(root)).index()
    assert "\n" not in str(caught.value) and "on_bad_file=skip" in str(caught.value)
    result = Kermany(root=str(root), on_bad_file="skip").index()
    assert len(result.table) == 4
    reasons = {Path(item["path"]).name: item["reason"] for item in result.skipped}
    assert "empty" in reasons[files[0].name] and "not a readable image" in reasons[files[1].name]


def test_verify_against_published_counts(kaggle_root):
    source = Kermany(root=str(kaggle_root))
    check = verify(source, summarize(source, source.index()))
    assert check["matches"] is False
    assert {"part": "all", "count": "n", "expected": 5856, "found": 17} in check["differences"]
    assert {"part": "val", "count": "n", "expected": 16, "found": 2} in check["differences"]


def test_summarize_cli_json(kaggle_root, tmp_path):
    copy = tmp_path / "k"
    shutil.copytree(kaggle_root, copy)
    result = run_cli("cxrsyn.data", "summarize", "data=kermany", f"data.root={copy}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["dataset"], summary["n"], summary["n_pos"], summary["n_neg"]) == ("kermany", 17, 10, 7)
    assert summary["splits"]["train"] == {"n": 10, "n_pos": 6, "n_neg": 4}
    assert summary["skipped"] == []
