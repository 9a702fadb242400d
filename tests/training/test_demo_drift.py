"""Documented results stay today's: one job of the demo (`make demo`: the crop ablation on phantom
stand-ins at its default settings) rerun now must reproduce the seed-0 numbers recorded in
experiments/crop_ablation/phantom/ (written by `make experiments`). Training on CPU is deterministic, so any
difference means a change to training, data or the phantom moved the results: regenerate them
(`make experiments STUDIES=crop_ablation`, then the README's example) instead of loosening this test."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, run_cli

RECORDED = REPO_ROOT / "experiments" / "crop_ablation" / "phantom"


@pytest.mark.slow
def test_the_demos_cropped_arm_seed_0_reproduces_the_recorded_results(tmp_path):
    command = (RECORDED / "COMMAND").read_text().splitlines()[0].split()
    assert command[:5] == ["python", "-m", "cxrsyn.train", "+experiment=crop_ablation", "source=phantom"]
    assert command[5:] == [], "the recorded crop ablation must use the demo's settings (no overrides)"
    run = tmp_path / "run"
    result = run_cli(
        "cxrsyn.train",
        "+experiment=crop_ablation",
        "source=phantom",
        "hydra.mode=RUN",  # one job of the study: the cropped arm, seed 0
        "data=synthetic_cropped",
        "seed=0",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.enable_progress_bar=false",
        "gradcam.enabled=false",  # runs after the metrics: changes none of them
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    now = json.loads((run / "metrics.json").read_text())["test_sets"]
    recorded = pd.read_csv(RECORDED / "results.csv")
    recorded = recorded[(recorded["seed"] == 0) & (recorded["arm"] == "data=synthetic_cropped")]
    assert sorted(recorded["test_set"]) == sorted(now) == ["kermany", "rsna"]
    for row in recorded.itertuples(index=False):
        assert now[row.test_set]["n"] == row.n
        assert now[row.test_set]["auroc"] == pytest.approx(row.auroc, abs=1e-9)
        assert now[row.test_set]["aupr"] == pytest.approx(row.aupr, abs=1e-9)
