"""Download: the credentials message (no network needed to reach it) and unpacking to the readers' layout."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from cxrsyn.data.download import unpack
from cxrsyn.data.fixtures import rsna_patients, write_kermany_root, write_rsna_root
from cxrsyn.data.kermany import Kermany
from cxrsyn.data.rsna import RSNA
from cxrsyn.errors import CxrsynError
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
    assert len(lines) == 1 and "Kaggle credentials" in lines[0] and "kaggle.json" in lines[0], result.stderr


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
    # Kaggle's inner zips hold the folder's files; they unpack beside the zip, into stage_2_train_images/
    assert len(list((root).rglob("*.dcm"))) == 5 and not list(root.glob("*.zip"))


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
