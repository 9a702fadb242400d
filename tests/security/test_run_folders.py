"""A finished run is never overwritten, and one command at a time writes a folder.

Training into a folder that holds a finished run (metrics.json) stops in one line before Hydra writes
anything, unless ``ckpt_path=last`` (resume; tests/training/test_cli.py and test_experiments.py hold that
it still works, for a single run and for a study) or ``overwrite=true``. A second train, evaluate, audit,
report or postprocess into a folder in use stops at once with one line naming the holder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cxrsyn.core.runfolder import exclusive
from tests.conftest import run_cli, tiny_overrides
from tests.security.test_atomic_outputs import snapshot

pytestmark = pytest.mark.slow  # starts the commands as a user would


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, phantom_data_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli(
        "cxrsyn.train", *tiny_overrides(phantom_data_dir), "gradcam.enabled=false", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_training_into_a_finished_run_is_refused_and_changes_nothing(finished_run, phantom_data_dir):
    """Today it silently replaced metrics, checkpoints, predictions and train_files.csv of someone's run."""
    before = snapshot(finished_run)
    result = run_cli(
        "cxrsyn.train", *tiny_overrides(phantom_data_dir, seed=7), f"hydra.run.dir={finished_run}"
    )
    line = one_error_line(result)
    assert str(finished_run) in line and "finished run" in line
    assert "ckpt_path=last" in line and "overwrite=true" in line
    assert snapshot(finished_run) == before  # .hydra/ included: refused before Hydra wrote there


def test_a_study_into_a_sweep_folder_with_finished_jobs_is_refused_before_any_job(tmp_path, phantom_data_dir):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / "metrics.json").write_text('{"test_sets": {}}')
    (sweep / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    before = snapshot(sweep)
    result = run_cli(
        "cxrsyn.train", "-m", *tiny_overrides(phantom_data_dir), "seed=0,1", f"hydra.sweep.dir={sweep}"
    )
    line = one_error_line(result)
    assert "1 finished job(s) (0)" in line and "ckpt_path=last" in line
    after = snapshot(sweep)
    assert after.pop(".cxrsyn.lock") == b""  # the (empty) lock file is all that was made
    assert after == before and sorted(p.name for p in sweep.iterdir()) == [".cxrsyn.lock", "0"]


def test_overwrite_true_replaces_a_finished_run(tmp_path, phantom_data_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"test_sets": {}, "marker": "old"}))
    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(phantom_data_dir),
        "gradcam.enabled=false",
        "overwrite=true",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "marker" not in metrics and metrics["test_sets"]["phantom_real"]["n"] == 30
    assert "predictions/phantom_real.csv" in metrics["outputs"]


# ----------------------------------------------------------------------------------- one writer per folder
def commands(folder: Path, finished: Path, data_dir: Path) -> dict[str, list[str]]:
    ckpt = finished / "checkpoints" / "last.ckpt"
    return {
        "train": ["cxrsyn.train", *tiny_overrides(data_dir), f"hydra.run.dir={folder}"],
        "train -m": [
            "cxrsyn.train",
            "-m",
            *tiny_overrides(data_dir),
            "seed=0,1",
            f"hydra.sweep.dir={folder}",
        ],
        "evaluate": [
            "cxrsyn.evaluate",
            f"ckpt_path={ckpt}",
            "data=phantom_real",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={folder}",
        ],
        "audit": ["cxrsyn.audit", "source=phantom", f"paths.data_dir={data_dir}", f"out_dir={folder}"],
        "report": ["cxrsyn.report", str(folder)],
        "postprocess": ["cxrsyn.postprocess", f"in_dir={data_dir}/phantom/real_like", f"out_dir={folder}"],
    }


@pytest.mark.parametrize("command", ["train", "train -m", "evaluate", "audit", "report", "postprocess"])
def test_a_second_writer_into_a_folder_in_use_stops_at_once_naming_the_holder(
    tmp_path, finished_run, phantom_data_dir, command
):
    """Two runs in one folder interleaved their logs and left one run's metrics beside the other's config."""
    folder = tmp_path / "in_use"
    args = commands(folder, finished_run, phantom_data_dir)[command]
    with exclusive(folder, "cxrsyn.train"):  # this test process is the run writing the folder
        before = snapshot(folder)
        result = run_cli(*args)
        line = one_error_line(result)
        assert str(folder) in line and "in use" in line and f"pid {os.getpid()}" in line
        assert "cxrsyn.train" in line
        assert snapshot(folder) == before  # nothing written: no .hydra/, no log, no output
    assert not (folder / ".cxrsyn.lock.owner").exists()  # released


# ------------------------------------------------------------------------------- names on the command line
def test_evaluate_refuses_a_name_that_climbs_out_of_its_run_folder(tmp_path, finished_run, phantom_data_dir):
    """``python -m cxrsyn.evaluate ... name=../../../victim/important`` overwrote a file outside the run folder."""
    victim = tmp_path / "victim" / "important.csv"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    run_dir = tmp_path / "a" / "b"  # predictions/../../../ is tmp_path
    result = run_cli(
        "cxrsyn.evaluate",
        f"ckpt_path={finished_run / 'checkpoints' / 'last.ckpt'}",
        "data=phantom_real",
        f"paths.data_dir={phantom_data_dir}",
        "name=../../../victim/important",
        f"hydra.run.dir={run_dir}",
    )
    line = one_error_line(result)
    assert "name='../../../victim/important' cannot name a file" in line and "letters, digits" in line
    assert victim.read_text() == "precious\n" and not (run_dir / "metrics.json").exists()


def test_a_study_name_that_climbs_out_of_the_sweep_folder_is_refused(tmp_path, phantom_data_dir):
    result = run_cli(
        "cxrsyn.train",
        "+experiment=crop_ablation",
        "source=phantom",
        f"paths.data_dir={phantom_data_dir}",
        "experiment.name=../../escaped",
        f"hydra.sweep.dir={tmp_path}/a/b/${{experiment.name}}",
    )
    line = one_error_line(result)
    assert "experiment.name='../../escaped' cannot name a file" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == []
