"""Real test sets end to end: training tests on RSNA and Kermany (roots from the environment) and
``python -m cxrsyn.evaluate`` re-evaluates a checkpoint in the training run's format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from cxrsyn.testing.datasets.kermany import write_kermany_root
from cxrsyn.testing.datasets.rsna import RSNA_IMAGES, rsna_patients, write_rsna_root
from tests.conftest import run_cli, tiny_overrides
from tests.training.test_secrets import ENV_SECRETS, TYPED_OVERRIDES, leaks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("real")
    return {
        "rsna": write_rsna_root(base / "rsna", rsna_patients(6, 5, 3, seed=4)),
        "kermany": write_kermany_root(base / "kermany", {"train": (3, 3), "val": (1, 1), "test": (2, 3)}),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_roots, phantom_data_dir) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    env = {
        **os.environ,
        "CXRSYN_RSNA_ROOT": str(real_roots["rsna"]),
        "CXRSYN_KERMANY_ROOT": str(real_roots["kermany"]),
    }
    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(phantom_data_dir),
        "test_sets=[phantom_real,rsna,kermany]",
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_training_tests_on_the_real_sets(trained):
    run_dir, metrics = trained
    assert list(metrics["test_sets"]) == ["phantom_real", "rsna", "kermany"]
    rsna, kermany = metrics["test_sets"]["rsna"], metrics["test_sets"]["kermany"]
    assert (rsna["n"], rsna["n_pos"]) == (11, 5) and (kermany["n"], kermany["n_pos"]) == (13, 7)
    assert rsna["skipped"] == [] and kermany["skipped"] == []
    predictions = pd.read_csv(run_dir / rsna["predictions"])
    assert {"age", "age_flag", "sex", "view", "detailed_class"} <= set(predictions.columns)
    assert "cache_file" not in predictions.columns  # where it was read from is not an attribute
    assert set(pd.read_csv(run_dir / kermany["predictions"])["split"]) == {"train", "val", "test"}
    # subgroups: RSNA by sex, age band and view; Kermany by split and subtype (each subtype vs all normals)
    assert set(rsna["subgroups"]) == {"sex", "age_band", "view"}
    for groups in rsna["subgroups"].values():
        assert sum(group["n"] for group in groups.values()) == rsna["n"]
    assert set(kermany["subgroups"]) == {"split", "subtype"}
    subtypes = kermany["subgroups"]["subtype"]
    assert subtypes["normal"]["n_pos"] == 0 and subtypes["normal"]["n"] == kermany["n_neg"]
    for name in set(subtypes) - {"normal"}:
        assert subtypes[name]["vs"] == "all negatives" and subtypes[name]["n_neg"] == kermany["n_neg"]


def evaluate(trained, tmp_path, *overrides: str):
    run_dir, metrics = trained
    out = tmp_path / "eval"
    ckpt = run_dir / metrics["checkpoint"]["path"]
    result = run_cli(
        "cxrsyn.evaluate",
        f"ckpt_path={ckpt}",
        f"paths.data_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
        *overrides,
    )
    return result, out


def test_evaluate_reproduces_the_training_runs_predictions(trained, tmp_path, real_roots):
    result, out = evaluate(trained, tmp_path, "data=rsna", f"data.root={real_roots['rsna']}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "preprocessing from the checkpoint: image_size 48, resize stretch" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    run_dir, trained_metrics = trained
    assert metrics["test_sets"]["rsna"]["auroc"] == pytest.approx(
        trained_metrics["test_sets"]["rsna"]["auroc"]
    )
    again = pd.read_csv(out / "predictions" / "rsna.csv")
    first = pd.read_csv(run_dir / "predictions" / "rsna.csv")
    assert list(again.columns) == list(first.columns)
    pd.testing.assert_series_equal(again["prob"], first["prob"], atol=1e-6)
    # the threshold fixed on the training run's validation split is reused, not re-chosen on this test set
    assert metrics["validation_threshold"] == trained_metrics["validation_threshold"]
    fixed = metrics["test_sets"]["rsna"]["thresholds"]["at_validation_threshold"]
    assert fixed["threshold"] == trained_metrics["validation_threshold"]["value"]


def test_the_threshold_is_reused_only_for_the_weights_it_was_fixed_with(trained, tmp_path, real_roots):
    import torch

    run_dir, metrics = trained
    tested = run_dir / metrics["checkpoint"]["path"]
    assert metrics["checkpoint"]["tested"] == "last" and tested.name == "last.ckpt"
    checkpoint = torch.load(tested, map_location="cpu", weights_only=False)
    name = next(key for key in checkpoint["state_dict"] if key.endswith("weight"))
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name] + 0.01
    other = run_dir / "checkpoints" / "changed.ckpt"
    torch.save(checkpoint, other)
    out = tmp_path / "eval"
    result = run_cli(
        "cxrsyn.evaluate",
        f"ckpt_path={other}",
        "data=rsna",
        f"data.root={real_roots['rsna']}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["validation_threshold"] is None
    assert evaluated["validation_threshold_note"].startswith(
        "none: the run's threshold was fixed with other weights"
    )
    assert "at_validation_threshold" not in evaluated["test_sets"]["rsna"]["thresholds"]
    assert "threshold:   none: the run's threshold was fixed with other weights" in result.stdout


def test_kermany_with_several_images_per_patient_gets_patient_clustered_cis(trained, tmp_path):
    root = write_kermany_root(
        tmp_path / "kermany3", {"test": (15, 15)}, quirks=False, images_per_patient=3, seed=9
    )
    result, out = evaluate(trained, tmp_path, "data=kermany", f"data.root={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    kermany = json.loads((out / "metrics.json").read_text())["test_sets"]["kermany"]
    predictions = pd.read_csv(out / kermany["predictions"])
    assert list(predictions.columns[:4]) == ["path", "label", "prob", "patient"]
    assert (predictions.groupby("patient").size() == 3).all() and kermany["n_patients"] == 10
    # patients as the file names say: person<N> for pneumonia, the name without its last -NNNN for normals
    names = predictions["path"].str.rsplit("/", n=1).str[-1]
    expected = names.str.extract(r"^(person\d+)_")[0].fillna(
        names.str.replace(r"-\d+\.jpeg$", "", regex=True)
    )
    assert (predictions["patient"] == expected).all()
    assert kermany["ci_method"].startswith("patient-clustered stratified percentile bootstrap")


@pytest.mark.heavy
def test_evaluate_bad_dicom_stops_or_is_listed(trained, tmp_path, real_roots):
    import shutil

    root = tmp_path / "rsna_damaged"
    shutil.copytree(real_roots["rsna"], root)
    victim = sorted((root / RSNA_IMAGES).glob("*.dcm"))[0]
    victim.write_bytes(b"")
    result, _ = evaluate(trained, tmp_path, "data=rsna", f"data.root={root}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and victim.name in lines[-1] and "on_bad_file=skip" in lines[-1]
    assert "Traceback" not in result.stderr

    result, out = evaluate(trained, tmp_path, "data=rsna", f"data.root={root}", "data.on_bad_file=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    skipped = metrics["test_sets"]["rsna"]["skipped"]
    assert len(skipped) == 1 and skipped[0]["path"].endswith(victim.name) and "empty" in skipped[0]["reason"]
    assert "skipped:     1 file(s) of rsna" in result.stdout


def test_missing_root_names_the_download_command(trained, tmp_path):
    result, _ = evaluate(trained, tmp_path, "data=kermany", f"data.root={tmp_path}/absent")
    assert result.returncode == 2
    assert "python -m cxrsyn.data download kermany --root DIR" in result.stderr.strip().splitlines()[-1]


def test_missing_checkpoint(tmp_path):
    result = run_cli("cxrsyn.evaluate", f"ckpt_path={tmp_path}/none.ckpt", f"hydra.run.dir={tmp_path}/o")
    assert result.returncode == 2 and "is not a file" in result.stderr


class WritesAFile:
    """Unpickling this runs code: it writes ``path``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


def test_a_checkpoint_that_would_run_code_is_never_unpickled(tmp_path):
    import torch

    from cxrsyn.core.errors import CxrsynError
    from cxrsyn.models.checkpoints import load_model
    from cxrsyn.training.checkpoint_io import AtomicCheckpointIO

    marker, ckpt = tmp_path / "ran.txt", tmp_path / "downloaded.ckpt"
    payload = {
        "state_dict": {},
        "epoch": 3,
        "hyper_parameters": {"backbone": "resnet18"},
        "x": WritesAFile(marker),
    }
    torch.save(payload, ckpt)
    torch.load(ckpt, weights_only=False)  # the control: an unrestricted load runs it
    assert marker.read_text() == "ran"
    marker.unlink()
    result = run_cli(
        "cxrsyn.evaluate",
        f"ckpt_path={ckpt}",
        *TYPED_OVERRIDES,
        f"hydra.run.dir={tmp_path}/eval",
        env=ENV_SECRETS,
    )
    assert (tmp_path / "eval" / ".hydra" / "overrides.yaml").is_file() and leaks(tmp_path / "eval") == []
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert str(ckpt) in lines[0] and "needs exec to load" in lines[0] and "not unpickled" in lines[0]
    # Lightning's loaders, for evaluation and for resuming or testing in training, refuse it as well
    with pytest.raises(CxrsynError, match="needs exec to load"):
        load_model(ckpt)
    with pytest.raises(CxrsynError, match="needs exec to load"):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()
