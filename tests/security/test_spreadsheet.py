"""Every CSV cxrsyn writes is safe to open in a spreadsheet: a text cell that begins like a formula (``=``,
``+``, ``-``, ``@``, tab, carriage return) gets a leading apostrophe; numbers stay numbers, negative ones
too; cxrsyn's own readers get the original text back."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from cxrsyn.core.fileio import read_csv, spreadsheet_safe, spreadsheet_text, write_csv
from cxrsyn.core.manifest import read_manifest, write_manifest
from cxrsyn.evaluation.outputs import write_predictions
from cxrsyn.reporting.runs import find_runs
from cxrsyn.reporting.write import write_report
from tests.reporting.test_report import make_run

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\r=x"]
PLAIN = ["F", "PA erect", "data=synthetic_raw", "a-b", "it's", "'quoted", "", "naïve"]
NUMBERS = ["-0.5", "+3", "1e-4", "-12", ".5", "-1.5E+3"]


def _raw_cells(path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("cell", FORMULAS)
def test_formula_cells_get_an_apostrophe(cell):
    assert spreadsheet_safe(cell) == "'" + cell
    assert spreadsheet_text(spreadsheet_safe(cell)) == cell


@pytest.mark.parametrize("cell", PLAIN + NUMBERS)
def test_other_cells_and_numbers_as_text_are_unchanged(cell):
    assert spreadsheet_safe(cell) == cell and spreadsheet_text(cell) == cell


def test_escaping_is_reversible_even_for_cells_that_already_start_with_apostrophes():
    for cell in ["'=x", "''-y", "'@"]:
        assert spreadsheet_safe(cell) == "'" + cell and spreadsheet_text(spreadsheet_safe(cell)) == cell


def test_write_csv_neutralises_text_keeps_numbers_and_read_csv_round_trips(tmp_path):
    table = pd.DataFrame(
        {
            "=name": FORMULAS[:5] + PLAIN[:4],  # (a bare carriage return in a cell breaks any CSV reader)
            "value": np.linspace(-1.0, 1.0, 9),  # negative numbers stay numbers
            "count": np.arange(-4, 5),
            "text_number": ["-0.5", "+3", "1e-4", "-12", ".5", "7", "8", "9", "-1.5E+3"],
        }
    )
    path = write_csv(tmp_path / "t.csv", table)
    rows = _raw_cells(path)
    assert rows[0] == ["'=name", "value", "count", "text_number"]
    assert [row[0] for row in rows[1:6]] == ["'" + cell for cell in FORMULAS[:5]]
    assert [row[1] for row in rows[1:]] == [str(v) for v in np.linspace(-1.0, 1.0, 9)]
    assert rows[1][2] == "-4" and rows[1][3] == "-0.5"
    for row in rows[1:]:
        assert not row[0].startswith(("=", "+", "-", "@", "\t", "\r"))
    back = read_csv(path)
    pd.testing.assert_frame_equal(back.drop(columns=["text_number"]), table.drop(columns=["text_number"]))


def test_predictions_and_manifests_are_spreadsheet_safe_and_read_back_exactly(tmp_path):
    attacks = ["=1+1", "@cmd", "+x", "-y"]
    table = pd.DataFrame(
        {
            "path": [f"images/{i}.png" for i in range(4)],
            "label": [1, 0, 1, 0],
            "prob": [0.9, 0.1, 0.8, 0.2],
            "patient": attacks,
            "sex": attacks,
        }
    )
    path = write_predictions(tmp_path / "run", "rsna", table)
    assert [row[3] for row in _raw_cells(path)[1:]] == ["'" + cell for cell in attacks]
    back = read_csv(path)
    assert list(back["patient"]) == attacks and list(back["sex"]) == attacks
    assert list(back["prob"]) == [0.9, 0.1, 0.8, 0.2]

    write_manifest(tmp_path / "set", table.drop(columns=["prob"]))
    assert [row[3] for row in _raw_cells(tmp_path / "set" / "manifest.csv")[1:]] == ["'" + a for a in attacks]
    assert list(read_manifest(tmp_path / "set")["sex"]) == attacks


def test_report_tables_are_spreadsheet_safe_and_pair_runs_by_their_original_text(tmp_path):
    """A manifest attribute beginning with ``=`` went verbatim into predictions CSVs, results.csv and
    study_comparisons.csv; the report still pairs the two runs' predictions image by image."""
    for job, (data, signal) in enumerate([("synthetic_raw", 0.2), ("synthetic_cropped", 1.5)]):
        folder = tmp_path / str(job)
        make_run(folder, data, 0, signal, test_sets=("rsna",))
        table = pd.read_csv(folder / "predictions" / "rsna.csv")
        table["path"] = (
            "=" + table["path"]
        )  # formula-looking image paths and attributes, as a manifest may hold
        table["sex"] = "@" + table["sex"]
        write_predictions(folder, "rsna", table)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["run"]["train_data"] = f"=HYPERLINK({job})"  # a name a spreadsheet would run
        (folder / "metrics.json").write_text(json.dumps(metrics))
        assert all(not row[0].startswith("=") for row in _raw_cells(folder / "predictions" / "rsna.csv")[1:])
    report = write_report(tmp_path, n_resamples=100)
    assert report["comparisons"] and report["comparisons"][0]["n"] == 300  # paired on the original paths
    predictions = find_runs(tmp_path).runs[0].predictions("rsna")
    assert predictions["path"].str.startswith("=").all() and predictions["sex"].str.startswith("@").all()
    assert set(pd.read_csv(tmp_path / "results.csv")["train_data"]) == {"'=HYPERLINK(0)", "'=HYPERLINK(1)"}
    for name in ("results.csv", "comparisons.csv", "study_comparisons.csv"):
        for row in _raw_cells(tmp_path / name):
            assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in row), (name, row)
            assert not any(cell.startswith("-") and not _is_number(cell) for cell in row), (name, row)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
