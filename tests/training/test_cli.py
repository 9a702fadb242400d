"""``python -m cxrsyn.train`` as users run it: one-line errors, resume after a kill, DDP, W&B offline."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from cxrsyn.core.config import available_choices, unknown_choice_message
from cxrsyn.core.manifest import read_manifest, write_manifest
from tests.conftest import REPO_ROOT, run_cli, tiny_overrides

pytestmark = pytest.mark.slow


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_unknown_config_choice_lists_the_options():
    result = run_cli("cxrsyn.train", "data=nope")
    assert_one_line_error(
        result,
        "no config 'nope' in group 'data'",
        f"choose one of: {', '.join(available_choices('data'))}",
    )
    assert "no config 'kermny' in group 'test_sets'" in unknown_choice_message(["test_sets=[rsna,kermny]"])
    assert unknown_choice_message(["test_sets=[]", "test_sets=[rsna,kermany]"]) is None
    assert "choose one of: cpu, ddp, gpu" in unknown_choice_message(["trainer=gpu,tpu"])
    assert unknown_choice_message(["+notes=free text"]) is None  # a new key, not a group choice
    assert unknown_choice_message(["data.image_size=64", "data=phantom", "hydra.run.dir=x"]) is None


def test_missing_dataset_folder(tmp_path):
    """Reported before any other source does work: the phantom test set is not generated first."""
    result = run_cli(
        "cxrsyn.train",
        "data=folder",
        f"data.root={tmp_path}/absent",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert_one_line_error(result, f"dataset folder {tmp_path}/absent does not exist")
    assert not (tmp_path / "data").exists()


def test_unknown_backbone(tmp_path, phantom_data_dir):
    overrides = tiny_overrides(phantom_data_dir, **{"model.backbone": "resnet5O"})
    result = run_cli("cxrsyn.train", *overrides, f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "model.backbone='resnet5O' is not a timm model; did you mean resnet50")


def test_unreadable_image_found_by_a_loader_worker(tmp_path, tiny_phantom):
    """A truncated PNG passes the header check and fails inside a DataLoader worker process."""
    source = tiny_phantom / "phantom" / "generator_like"
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    victim = read_manifest(folder)["path"].iloc[3]
    data = (folder / victim).read_bytes()
    (folder / victim).write_bytes(data[: len(data) // 2])
    overrides = tiny_overrides(tiny_phantom, **{"datamodule.num_workers": 1, "datamodule.val_fraction": 0.5})
    overrides = [o for o in overrides if not o.startswith(("data.", "test_sets."))]
    result = run_cli(
        "cxrsyn.train",
        *overrides,
        "data=folder",
        f"data.root={folder}",
        "test_sets=[]",
        f"+test_sets.real={{_target_: cxrsyn.data.sources.DatasetFolder, root: {tiny_phantom}/phantom/real_like}}",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert_one_line_error(result, f"image {folder / victim} could not be decoded", "replace the file")


# ---------------------------------------------------------------------------------------------- resume
# 40 + 40 phantom images: 64 in training, 8 steps per epoch. An epoch budget, and a step budget (a study's)
# that ends inside the fourth epoch
BUDGETS = {
    "epochs": {"trainer.max_epochs": 4},
    "steps": {"trainer.max_epochs": -1, "trainer.max_steps": 28, "model.warmup_steps": 3},
}


def resume_overrides(data_dir: Path, budget: str = "epochs") -> list[str]:
    return tiny_overrides(
        data_dir,
        **{
            "data.n_per_class": 40,
            "datamodule.num_workers": 1,
            "model.drop_rate": 0.2,
            **BUDGETS[budget],
        },
    )


@pytest.mark.heavy
@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_killed_run_resumes_to_the_same_result(tmp_path, budget):
    data_dir = tmp_path / "data"
    reference = tmp_path / "reference"
    first = run_cli("cxrsyn.train", *resume_overrides(data_dir, budget), f"hydra.run.dir={reference}")
    assert first.returncode == 0, first.stderr[-3000:]

    crashed = tmp_path / "crashed"
    command = [
        sys.executable,
        "-m",
        "cxrsyn.train",
        *resume_overrides(data_dir, budget),
        f"hydra.run.dir={crashed}",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = crashed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # as an OOM killer or a pre-empted node would
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (crashed / "metrics.json").exists()
    epoch_at_kill = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert epoch_at_kill < 3

    resumed = run_cli(
        "cxrsyn.train", *resume_overrides(data_dir, budget), f"hydra.run.dir={crashed}", "ckpt_path=last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in resumed.stderr + resumed.stdout

    expected = json.loads((reference / "metrics.json").read_text())
    actual = json.loads((crashed / "metrics.json").read_text())
    for key in ("auroc", "aupr"):
        assert actual["test_sets"]["phantom_real"][key] == expected["test_sets"]["phantom_real"][key]
    assert actual["training"] == expected["training"]  # the same steps, images seen and schedule
    if budget == "steps":
        assert actual["training"]["steps"] == 28 and actual["training"]["images_seen"] == 3 * 64 + 4 * 8
    reference_probs = pd.read_csv(reference / "predictions" / "phantom_real.csv")["prob"]
    resumed_probs = pd.read_csv(crashed / "predictions" / "phantom_real.csv")["prob"]
    np.testing.assert_array_equal(resumed_probs, reference_probs)
    log = pd.read_csv(crashed / "csv" / "metrics.csv")
    assert 0 in set(log["epoch"].dropna()) and 3 in set(log["epoch"].dropna())  # pre-crash rows kept


# ------------------------------------------------------------------------------------------------- DDP
def test_ddp_on_cpu_evaluates_every_sample_once(tmp_path, tiny_phantom):
    """Two gloo processes; an odd-sized test set forces the sampler to pad one rank with a duplicate."""
    real = tiny_phantom / "phantom" / "real_like"
    odd = tmp_path / "odd"
    shutil.copytree(real, odd)
    write_manifest(odd, read_manifest(odd).iloc[:-1])  # 29 images
    run_dir = tmp_path / "run"
    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(tiny_phantom),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",
        "trainer.deterministic=true",
        "trainer.benchmark=false",
        f"+test_sets.odd={{_target_: cxrsyn.data.sources.DatasetFolder, root: {odd}}}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (
        "world_size: 2" in result.stderr + result.stdout
        or "distributed_backend=gloo" in result.stderr + result.stdout
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())["test_sets"]
    for name, size in (("phantom_real", 30), ("odd", 29)):
        table = pd.read_csv(run_dir / "predictions" / f"{name}.csv")
        assert len(table) == size and table["path"].is_unique and metrics[name]["n"] == size
        assert metrics[name]["auroc"] == pytest.approx(
            roc_auc_score(table["label"], table["prob"]), abs=1e-12
        )


# ---------------------------------------------------------------------------------------- W&B, secrets
def test_wandb_offline_without_a_key_and_no_secret_in_any_file(tmp_path, phantom_data_dir):
    secret = "AIzaTEST-not-a-real-key-0123456789"
    run_dir = tmp_path / "run"
    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(phantom_data_dir),
        "logger=wandb",
        "logger.wandb.group=${oc.env:GEMINI_API_KEY}",
        f"hydra.run.dir={run_dir}",
        env={"GEMINI_API_KEY": secret, "WANDB_API_KEY": "", "NETRC": str(tmp_path / "no-netrc")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "wandb: offline mode" in result.stderr + result.stdout
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # offline, W&B keeps the logged config inside the run's record file
    (record,) = runs[0].glob("run-*.wandb")
    assert b"group" in record.read_bytes() and b"<redacted>" in record.read_bytes()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["logger"]["wandb"]["group"] == "<redacted>"
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
    assert secret not in result.stdout + result.stderr
