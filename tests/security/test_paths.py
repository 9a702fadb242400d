"""Nothing is written outside the folder the user named, and a dataset reads nothing outside its root.

Names that become path components are checked when read; manifest paths are normalised, and paths that are
absolute, climb with ``..`` or leave the root through a symlink are refused unless allowed (and the run then
records that they were); one file listed twice is one image, and two labels for it are an error; postprocess
never writes two inputs to one output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.core.paths import check_name, inside
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.data.sources import DatasetFolder
from cxrsyn.data.transforms import crop_bottom
from cxrsyn.evaluation.outputs import write_predictions
from cxrsyn.generate.postprocess import crop_folder
from cxrsyn.reporting.write import write_report
from tests.reporting.test_report import make_run


def _png(path: Path, value: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size), value, np.uint8)
    pixels[: size // 2] = 255 - value  # top and bottom differ, so a crop shows
    Image.fromarray(pixels).save(path)


def _folder(root: Path, rows: list[tuple[str, int]], images: dict[str, int] | None = None) -> Path:
    """A dataset folder whose manifest lists ``rows`` (path, label); ``images`` are written (path -> grey)."""
    root.mkdir(parents=True, exist_ok=True)
    for path, value in (images or {path: 40 + 30 * i for i, (path, _) in enumerate(rows)}).items():
        _png(root / path, value)
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(root / "manifest.csv", index=False)
    return root


# ------------------------------------------------------------------------------------- names and outputs
@pytest.mark.parametrize(
    "name", ["../../victim/important", "a/b", "..", ".hidden", "=HYPERLINK(1)", "", "x" * 200]
)
def test_a_name_that_is_not_one_safe_path_component_is_refused_in_one_line(name):
    with pytest.raises(CxrsynError) as raised:
        check_name(name, "name=")
    assert "\n" not in str(raised.value) and "letters, digits" in str(raised.value)


@pytest.mark.parametrize("name", ["rsna", "kermany_test", "nih-expert", "set.2", "A1"])
def test_ordinary_names_pass(name):
    assert check_name(name, "name=") == name


def test_predictions_named_with_a_traversal_are_refused_and_nothing_is_written_outside(tmp_path):
    """``python -m cxrsyn.evaluate ... name=../../../victim/important`` overwrote a file outside the run
    folder through ``predictions/<name>.csv``."""
    run, victim = tmp_path / "a" / "b", tmp_path / "victim"  # predictions/../../../ is tmp_path
    victim.mkdir()
    (victim / "important.csv").write_text("precious\n")
    table = pd.DataFrame({"path": ["x.png"], "label": [1], "prob": [0.5]})
    with pytest.raises(CxrsynError, match="cannot name a file"):
        write_predictions(run, "../../../victim/important", table)
    assert (victim / "important.csv").read_text() == "precious\n"


def test_an_output_path_that_resolves_outside_its_folder_is_refused(tmp_path):
    folder, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "gradcam").symlink_to(elsewhere)  # a planted symlink inside the run folder
    assert inside(folder, "predictions/rsna.csv") == folder / "predictions/rsna.csv"
    for path in ("../x.csv", "gradcam/x.png", str(elsewhere / "x.png")):
        with pytest.raises(CxrsynError, match="outside"):
            inside(folder, path)


def test_a_test_set_name_with_a_slash_is_refused_when_read(tmp_path):
    folder = _folder(tmp_path / "set", [("images/a.png", 1), ("images/b.png", 0)])
    with pytest.raises(CxrsynError, match=r"test set name 'rsna/adults' cannot name a file"):
        CXRDataModule(test_sets={"rsna/adults": DatasetFolder(root=str(folder))})


def test_the_report_refuses_a_run_whose_test_set_name_is_not_a_safe_name(tmp_path):
    """A test-set name with ``/`` in a metrics.json crashed the report's figures (roc_<name>.png)."""
    make_run(tmp_path / "0", "synthetic_raw", 0, 0.5, test_sets=("rsna",))
    metrics_path = tmp_path / "0" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["test_sets"] = {"rsna/adults": metrics["test_sets"]["rsna"]}
    metrics_path.write_text(json.dumps(metrics))
    with pytest.raises(CxrsynError) as raised:
        write_report(tmp_path, n_resamples=50)
    message = str(raised.value)
    assert "\n" not in message and str(metrics_path) in message and "'rsna/adults'" in message


# ------------------------------------------------------------------------------------- dataset paths
@pytest.mark.parametrize(
    ("listed", "reason"),
    [
        ("/etc/passwd", "is absolute"),
        ("../outside.png", "contains '..'"),
        ("images/../../x.png", "contains '..'"),
    ],
)
def test_a_manifest_path_outside_the_root_is_refused_naming_its_line(tmp_path, listed, reason):
    folder = _folder(tmp_path / "set", [("images/a.png", 1), (listed, 0)], {"images/a.png": 50})
    with pytest.raises(CxrsynError) as raised:
        read_manifest(folder)
    message = str(raised.value)
    assert "\n" not in message and "manifest.csv line 3" in message and reason in message
    assert "allow_outside_root=true" in message


def test_a_symlink_out_of_the_root_is_refused_unless_allowed_and_the_run_records_it(tmp_path):
    outside = tmp_path / "elsewhere" / "b.png"
    _png(outside, 90)
    folder = _folder(tmp_path / "set", [("images/a.png", 1), ("images/b.png", 0)], {"images/a.png": 50})
    (folder / "images" / "b.png").symlink_to(outside)
    with pytest.raises(CxrsynError, match=r"manifest.csv line 3: path 'images/b.png' resolves outside"):
        read_manifest(folder)

    allowed = DatasetFolder(root=str(folder), allow_outside_root=True)
    datamodule = CXRDataModule(test_sets={"mine": allowed}, num_workers=0)
    datamodule.setup("test")
    found = datamodule.summary["test_sets"]["mine"]["found"]  # metrics.json: data.test_sets.mine.found
    assert found["allow_outside_root"] is True and found["outside_root"] == 1
    assert datamodule.summary["test_sets"]["mine"]["n"] == 2


def test_an_allowed_absolute_path_is_read(tmp_path):
    outside = tmp_path / "elsewhere" / "b.png"
    _png(outside, 90)
    folder = _folder(tmp_path / "set", [("images/a.png", 1), (str(outside), 0)], {"images/a.png": 50})
    table = read_manifest(folder, allow_outside_root=True)
    assert list(table["path"]) == ["images/a.png", str(outside)]


def test_one_file_under_several_spellings_is_one_image(tmp_path):
    images = {"images/x.png": 60, "images/y.png": 120}
    same = _folder(
        tmp_path / "same", [("images/x.png", 1), ("./images//x.png", 1), ("images/y.png", 0)], images
    )
    with pytest.raises(CxrsynError) as raised:
        read_manifest(same)
    message = str(raised.value)
    assert (
        "\n" not in message and "lines 2 and 3 list one file" in message and "list each image once" in message
    )

    conflict = _folder(
        tmp_path / "conflict", [("images/x.png", 1), ("images/y.png", 0), ("images/./x.png", 0)], images
    )
    with pytest.raises(CxrsynError, match=r"lines 2 and 4 list one file .*different labels \(1 and 0\)"):
        read_manifest(conflict)

    (tmp_path / "same" / "images" / "alias.png").symlink_to(tmp_path / "same" / "images" / "x.png")
    aliased = _folder(tmp_path / "same", [("images/x.png", 1), ("images/alias.png", 0)], {})
    with pytest.raises(CxrsynError, match=r"lines 2 and 3 list one file .*different labels"):
        read_manifest(aliased)


def test_paths_are_read_normalised_and_exclude_files_match_any_spelling(tmp_path):
    images = {"images/x.png": 60, "images/y.png": 120, "images/z.png": 200}
    folder = _folder(
        tmp_path / "set", [("./images/x.png", 1), ("images//y.png", 0), ("images/z.png", 0)], images
    )
    assert list(read_manifest(folder)["path"]) == ["images/x.png", "images/y.png", "images/z.png"]
    (tmp_path / "exclude.txt").write_text("./images/z.png\n")
    source = DatasetFolder(root=str(folder), exclude_file=str(tmp_path / "exclude.txt"))
    datamodule = CXRDataModule(test_sets={"mine": source}, num_workers=0)
    datamodule.setup("test")
    assert list(datamodule.tables["mine"]["path"]) == ["images/x.png", "images/y.png"]


# ------------------------------------------------------------------------------------- postprocess
def test_postprocess_keeps_the_layout_so_two_inputs_never_share_an_output(tmp_path):
    """``a/x.png`` and ``b/x.png`` were both written to images/x.png: the pneumonia image was overwritten
    and the run said "2 written"."""
    source = _folder(tmp_path / "in", [("a/x.png", 1), ("b/x.png", 0)], {"a/x.png": 30, "b/x.png": 220})
    out = tmp_path / "out"
    assert crop_folder(source, out, 0.25)["written"] == 2
    derived = read_manifest(out)
    assert derived["path"].is_unique and len(derived) == 2
    for row in derived.itertuples(index=False):
        expected = crop_bottom(np.asarray(Image.open(source / row.source_path)), 0.25)
        np.testing.assert_array_equal(np.asarray(Image.open(out / row.path)), expected)
    assert dict(zip(derived["source_path"], derived["label"], strict=True)) == {"a/x.png": 1, "b/x.png": 0}


def test_postprocess_refuses_two_inputs_that_would_still_meet(tmp_path):
    source = _folder(tmp_path / "in", [("images/x.png", 1), ("images/x.jpg", 0)], {"images/x.png": 30})
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(source / "images" / "x.jpg")
    with pytest.raises(CxrsynError) as raised:
        crop_folder(source, tmp_path / "out", 0.3)
    message = str(raised.value)
    assert "\n" not in message and "lines 2 and 3" in message and "images/x.png" in message
    assert not (tmp_path / "out" / "images").exists()
