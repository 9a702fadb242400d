"""Real Lightning training on CPU through the composed Hydra config."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrsyn.core.errors import CxrsynError
from cxrsyn.evaluation.statistics import bootstrap_ci
from cxrsyn.training.run import train
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, phantom_data_dir):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*tiny_overrides(phantom_data_dir), f"paths.output_dir={run_dir}"])
    metrics = train(cfg)
    return run_dir, metrics


def test_run_writes_checkpoints_metrics_predictions_config_and_log(finished_run):
    run_dir, metrics = finished_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert (run_dir / "predictions" / "phantom_real.csv").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["root"] == str(config["paths"]["data_dir"]) + "/phantom/generator_like"
    assert "${" not in (run_dir / "config.yaml").read_text()  # resolved
    assert json.loads((run_dir / "data_summary.json").read_text())["test_sets"]["phantom_real"]["n"] == 30


def test_metrics_equal_scikit_learn_on_the_predictions_file(finished_run):
    run_dir, metrics = finished_run
    result = metrics["test_sets"]["phantom_real"]
    table = pd.read_csv(run_dir / result["predictions"])
    assert list(table.columns[:4]) == ["path", "label", "prob", "patient"]
    assert table["path"].is_unique and len(table) == result["n"] == 30
    assert (result["n_pos"], result["n_neg"]) == (15, 15)
    assert result["auroc"] == pytest.approx(roc_auc_score(table["label"], table["prob"]), abs=1e-12)
    assert result["aupr"] == pytest.approx(average_precision_score(table["label"], table["prob"]), abs=1e-12)
    assert table["sex"].notna().all()  # attributes travel with the predictions
    # the CIs are the patient-clustered bootstrap of the predictions file, reproducible from it and the seed
    assert result["auroc_ci"][0] <= result["auroc"] <= result["auroc_ci"][1]
    assert result["aupr_ci"][0] <= result["aupr"] <= result["aupr_ci"][1]
    again = bootstrap_ci(
        table["label"].to_numpy(), table["prob"].to_numpy(), 2000, 0, patients=table["patient"].to_numpy()
    )
    assert [result["auroc_ci"], result["aupr_ci"]] == [again["auroc_ci"], again["aupr_ci"]]
    assert result["ci_method"].startswith("patient-clustered (one image per patient) stratified percentile")
    # operating points: the threshold is fixed on the validation split; those chosen on the test set say so
    fixed = result["thresholds"]["at_validation_threshold"]
    assert fixed["threshold"] == metrics["validation_threshold"]["value"]
    assert fixed["tp"] == int(((table["prob"] >= fixed["threshold"]) & (table["label"] == 1)).sum())
    assert set(result["thresholds"]) == {
        "at_validation_threshold",
        "at_test_youden",
        "at_specificity_0.90",
        "at_specificity_0.95",
    }
    for name in ("at_test_youden", "at_specificity_0.90", "at_specificity_0.95"):
        assert result["thresholds"][name]["chosen_on"] == "this test set (optimistic)"
    assert 0.0 <= result["calibration"]["ece"] <= 1.0 and 0.0 <= result["calibration"]["brier"] <= 1.0


def test_the_tested_checkpoint_validation_predictions_and_threshold_are_recorded(finished_run):
    from cxrsyn.core.fileio import sha256_of_file
    from cxrsyn.evaluation.metrics import youden_threshold

    run_dir, metrics = finished_run
    checkpoint = metrics["checkpoint"]
    assert checkpoint["tested"] == "last" and checkpoint["path"] == "checkpoints/last.ckpt"
    assert checkpoint["sha256"] == sha256_of_file(run_dir / checkpoint["path"])
    assert checkpoint["best_path"].startswith("checkpoints/best-epoch")
    validation = metrics["validation"]
    table = pd.read_csv(run_dir / validation["predictions"])
    assert len(table) == validation["n"] == metrics["data"]["val"]["n"]
    assert validation["auroc"] == pytest.approx(roc_auc_score(table["label"], table["prob"]), abs=1e-12)
    assert metrics["validation_saturated"] == (validation["auroc"] == 1.0)
    threshold = metrics["validation_threshold"]
    assert threshold["value"] == youden_threshold(table["label"].to_numpy(), table["prob"].to_numpy())
    assert threshold["checkpoint_sha256"] == checkpoint["sha256"]


def test_predictions_are_the_tested_checkpoints_outputs(finished_run):
    """Reload the tested checkpoint and predict the test set by hand from its files, decoded as the cache
    stores them (8-bit at the input size): the same probabilities as the file."""
    from cxrsyn.data.decode import Preprocessing, decode_resized
    from cxrsyn.models.classifier import PneumoniaClassifier

    run_dir, metrics = finished_run
    model = PneumoniaClassifier.load_from_checkpoint(run_dir / metrics["checkpoint"]["path"]).eval()
    table = pd.read_csv(run_dir / "predictions" / "phantom_real.csv")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["test_sets"]["phantom_real"]["cache"] is True
    root = config["test_sets"]["phantom_real"]["root"]
    prep = Preprocessing(config["datamodule"]["image_size"], config["datamodule"]["resize"])
    pixels = np.stack([decode_resized(f"{root}/{p}", prep) for p in table["path"]]).astype(np.float32) / 255
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.from_numpy(pixels)[:, None])).numpy()
    np.testing.assert_allclose(probs, table["prob"], atol=1e-6)


def test_bad_inputs_raise_one_line_errors(compose_train, phantom_data_dir, tmp_path):
    cases = {
        "model.backbone=resnet5O": "model.backbone='resnet5O' is not a timm model; did you mean",
        "datamodule.resize=squash": "datamodule.resize='squash' is unknown",
        "model.pos_weight=heavy": "model.pos_weight='heavy'",
        "+model.dropout=0.2": r"config 'model': .*unexpected keyword argument 'dropout'",
    }
    for override, message in cases.items():
        cfg = compose_train([*tiny_overrides(phantom_data_dir), f"paths.output_dir={tmp_path}", override])
        with pytest.raises(CxrsynError, match=message) as error:
            train(cfg)
        assert "\n" not in str(error.value)


def test_two_stage_job_pretrains_then_starts_from_those_weights(phantom_data_dir, tmp_path):
    """``pretrain``: a first fit on another source inside the job, whose last weights the second fit starts
    from; the run identity names the checkpoint by path and sha256, and both stages list their images."""
    from hydra import compose, initialize_config_dir

    from cxrsyn.core.fileio import sha256_of_file
    from tests.conftest import CONF_DIR

    run_dir = tmp_path / "run"
    overrides = [
        *tiny_overrides(phantom_data_dir, **{"data.crop_bottom_fraction": 0.0, "gradcam.enabled": False}),
        "+data@pretrain.data=phantom",
        "+pretrain.max_epochs=1",
        "pretrain.data.n_per_class=16",  # the tiny phantom set of the session, cropped
        "pretrain.data.image_size=64",
        "data.max_per_class=12",
        f"paths.output_dir={run_dir}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    init = metrics["run"]["init"]
    assert init["path"] == "pretrain/checkpoints/last.ckpt" and init["part"] == "backbone"
    assert init["sha256"] == sha256_of_file(run_dir / init["path"])
    assert init["pretrain"]["epochs_trained"] == 1 and init["pretrain"]["max_epochs"] == 1
    assert init["pretrain"]["train"]["n"] == 26  # 32 phantom images less the validation split
    assert metrics["epochs_trained"] == 2
    listed = pd.read_csv(run_dir / "train_files.csv")
    assert len(listed) == 24 and (listed["label"] == 1).sum() == 12  # data.max_per_class=12
    assert metrics["data"]["train_sources"][str(cfg.data.root)]["selection"]["selected"] == 24
    assert (
        metrics["data"]["train"]["files"] == "train_files.csv"
        and metrics["lists"]["train_files"] == "train_files.csv"
    )
    assert len(pd.read_csv(run_dir / "pretrain" / "train_files.csv")) == 32


def test_arms_of_different_sizes_take_the_same_steps_under_the_same_schedule(phantom_data_dir, tmp_path):
    """A step budget (``trainer.max_steps``) held equal between two arms whose training splits differ (26 and
    16 images, 4 and 2 steps per epoch): both take 6 steps with the same learning rate at every step (warmup
    in steps, cosine over the budget), metrics.json says what each took, and the larger arm's budget ends
    inside its second epoch, where its final weights are still validated and saved as last.ckpt."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    budget = {
        "trainer.max_epochs": -1,
        "trainer.max_steps": 6,
        "model.warmup_steps": 2,
        "model.lr": 1e-3,
        "model.min_lr_ratio": 0.1,
        "callbacks.learning_rate_monitor.logging_interval": "step",
        "gradcam.enabled": False,
        "evaluation.bootstrap.n_resamples": 0,
    }
    runs = {}
    for arm, extra in (("all", {}), ("subsample", {"data.max_per_class": 10})):
        run_dir = tmp_path / arm
        overrides = [*tiny_overrides(phantom_data_dir, **budget, **extra), f"paths.output_dir={run_dir}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            metrics = train(compose("train", overrides=overrides))
        log = pd.read_csv(run_dir / "csv" / "metrics.csv")
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        runs[arm] = (metrics["training"], log, last)
    (big, big_log, big_last), (small, small_log, small_last) = runs["all"], runs["subsample"]
    assert (big["train_images"], big["steps_per_epoch"], small["train_images"], small["steps_per_epoch"]) == (
        26,
        4,
        16,
        2,
    )
    for record, last in ((big, big_last), (small, small_last)):
        assert record["steps"] == last["global_step"] == 6 and record["max_steps"] == 6
        assert (record["warmup_steps"], record["schedule_steps"]) == (2, 6)
    assert big["images_seen"] == 26 + 2 * 8 and big["epochs"] == pytest.approx(42 / 26, abs=1e-4)
    assert small["images_seen"] == 3 * 16 and small["epochs"] == 3.0
    # the schedule: linear warmup over 2 steps, then a cosine from 1e-3 to 1e-4 at step 6, per step in both
    expected = [1e-3 * f for f in (1 / 3, 2 / 3)] + [
        1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - 2) / 4))) for step in range(2, 6)
    ]
    for log in (big_log, small_log):
        rates = log.dropna(subset=["lr-AdamW/pg1"]).drop_duplicates("step")["lr-AdamW/pg1"]
        np.testing.assert_allclose(rates.to_numpy(), expected, rtol=1e-6)
    # the larger arm stopped inside epoch 1: its final weights were validated there, during fitting
    during_fit = big_log.dropna(subset=["val/auroc"])
    assert 1 in set(during_fit["epoch"]) and big_last["epoch"] == 1
