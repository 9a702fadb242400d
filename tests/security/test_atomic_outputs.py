"""Outputs are all new or all old: a report, a run's metrics.json with its predictions, an audit. A kill or a
full disk mid-way leaves the previous set untouched and no stray file; a full disk is one line. Every output
file gets one mode (0666 less the umask)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cxrsyn.core import fileio
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import publishing, write_csv, write_json
from cxrsyn.evaluation.outputs import write_results
from cxrsyn.reporting import write as report_module
from cxrsyn.reporting.write import write_report
from tests.reporting.test_report import make_run


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), except under the top-level folders ``skip``."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).parts[0] not in skip
    }


def full_disk_after(monkeypatch: pytest.MonkeyPatch, n_writes: int) -> None:
    """The disk fills up on the ``n_writes``-th write through cxrsyn's one writer: half the bytes land, then
    ENOSPC, as a real full disk does."""
    real, calls = fileio._write_all, []

    def write(handle: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) >= n_writes:
            real(handle, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(handle, data)

    monkeypatch.setattr(fileio, "_write_all", write)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for job, (data, seed, signal) in enumerate(
        [
            ("synthetic_raw", 0, 0.2),
            ("synthetic_cropped", 0, 1.5),
            ("synthetic_raw", 1, 0.2),
            ("synthetic_cropped", 1, 1.5),
        ]
    ):
        make_run(tmp_path / str(job), data, seed, signal, test_sets=("rsna",))
    write_report(tmp_path, n_resamples=100, seed=0)
    return tmp_path


RUNS = ("0", "1", "2", "3")


@pytest.mark.parametrize("n_writes", [1, 3, 6])
def test_a_full_disk_leaves_the_previous_report_intact_in_one_line(sweep, monkeypatch, n_writes):
    """A full disk left a 0-byte results.md and a stray tmp file beside new CSVs."""
    before = snapshot(sweep, RUNS)
    assert {"results.md", "results.csv", "report.json", "roc_rsna.png"} <= set(before)
    full_disk_after(monkeypatch, n_writes)
    with pytest.raises(CxrsynError) as raised:
        write_report(sweep, n_resamples=200, seed=1)  # other numbers than the report on disk
    message = str(raised.value)
    assert "\n" not in message and "no space left" in message and "unchanged" in message
    assert snapshot(sweep, RUNS) == before  # nothing new, nothing removed, no tmp or staging file


def test_a_report_killed_mid_way_leaves_the_previous_report(sweep, monkeypatch):
    """Killing ``python -m cxrsyn.report`` mid-way left new CSVs beside an old results.md and report.json."""
    before = snapshot(sweep, RUNS)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C (or a kill) after the tables and figures were made

    monkeypatch.setattr(report_module, "render_markdown", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(sweep, n_resamples=200, seed=1)
    assert snapshot(sweep, RUNS) == before


def test_a_staging_folder_left_by_a_killed_report_is_ignored_and_removed(sweep):
    stale = sweep / ".report.json.staging"
    (stale / "sub").mkdir(parents=True)
    (stale / "results.md").write_text("half")
    (stale / "sub" / "metrics.json").write_text("{}")  # must not be taken for a run
    report = write_report(sweep, n_resamples=100, seed=0)
    assert report["runs"] == 4 and not stale.exists()
    on_disk = [name for name in snapshot(sweep, RUNS) if name != "report.json" and not name.startswith(".")]
    assert sorted(report["outputs"]) == sorted(on_disk)  # the lock file aside


def test_a_new_report_removes_the_figures_of_the_old_one(sweep):
    (sweep / "1" / "metrics.json").unlink()  # a test set the new report no longer has: its figure goes
    (sweep / "3" / "metrics.json").unlink()
    for job in ("0", "2"):
        make_run(sweep / job, "synthetic_raw", int(job) // 2, 0.2, test_sets=("kermany",))
    report = write_report(sweep, n_resamples=100, seed=0)
    assert report["test_sets"] == ["kermany"]
    assert not (sweep / "roc_rsna.png").exists() and (sweep / "roc_kermany.png").is_file()


# ---------------------------------------------------------------------------------- a run's results
def fake_results(probs: np.ndarray) -> tuple[SimpleNamespace, SimpleNamespace]:
    """What ``write_results`` reads of a datamodule and a tested model, for one test set."""
    n = len(probs)
    table = pd.DataFrame({"path": [f"images/{i}.png" for i in range(n)], "label": np.arange(n) % 2})
    table["patient"] = table["path"]
    datamodule = SimpleNamespace(
        test_set_names=["rsna"],
        tables={"rsna": table},
        summary={"test_sets": {"rsna": {"skipped": [], "found": {}}}},
    )
    model = SimpleNamespace(test_predictions={"rsna": SimpleNamespace(indices=np.arange(n), probs=probs)})
    return datamodule, model


def test_a_full_disk_keeps_a_runs_metrics_beside_the_predictions_they_came_from(tmp_path, monkeypatch):
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    first = write_results(run, *fake_results(rng.random(40)), {"path": "a.ckpt"}, 1.0)
    assert first["outputs"] == ["predictions/rsna.csv"]
    before = snapshot(run)
    full_disk_after(monkeypatch, 2)  # the predictions are written, metrics.json is not
    with pytest.raises(CxrsynError, match="no space left"):
        write_results(run, *fake_results(rng.random(40)), {"path": "b.ckpt"}, 1.0)
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_output_gets_the_same_mode_under_the_umask(tmp_path, umask):
    """metrics.json and report.json were 0600, everything else 0644."""
    previous = os.umask(umask)
    try:
        folder = tmp_path / "outputs"
        write_json(folder / "a.json", {"x": 1})
        write_csv(folder / "b.csv", pd.DataFrame({"x": [1]}))
        with publishing(folder / "set", "manifest.json") as publication:
            write_csv(publication.path("c/d.csv"), pd.DataFrame({"x": [1]}))
            publication.write_manifest({})
        write_results(folder / "run", *fake_results(np.linspace(0, 1, 10)), {"path": "a.ckpt"}, 1.0)
        for job, data in enumerate(["synthetic_raw", "synthetic_cropped"]):
            make_run(folder / "study" / str(job), data, 0, 1.0, test_sets=("rsna",))
        write_report(folder / "study", n_resamples=50)
        modes = {
            str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()
        }
    finally:
        os.umask(previous)
    for name in (
        "a.json",
        "run/metrics.json",
        "run/predictions/rsna.csv",
        "study/report.json",
        "study/results.md",
    ):
        assert name in modes
    expected = 0o666 & ~umask
    assert {name: mode for name, mode in modes.items() if mode != expected} == {}
