"""One training run from a composed config: fit, test on every test set, write the results."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from cxrsyn.core.compose import (
    RESOLVED_CONFIG_NAME,
    build_datamodule,
    excluded_cell,
    instantiate_node,
    resolved_config,
    settings_at,
)
from cxrsyn.core.config import code_version
from cxrsyn.core.environment import environment
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import publishing, read_csv, sha256_of_file, write_json
from cxrsyn.core.logs import quiet_third_party_noise
from cxrsyn.core.parallel import restore_start_method, usable_cores
from cxrsyn.core.runfolder import check_finished, exclusive
from cxrsyn.core.secrets import redact_overrides
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.evaluation.metrics import binary_metrics, youden_threshold
from cxrsyn.evaluation.outputs import (
    EXCLUDED_NAME,
    METRICS_NAME,
    collect_results,
    predictions_table,
    print_results,
    write_predictions,
)
from cxrsyn.models.classifier import PneumoniaClassifier
from cxrsyn.training.budget import check_budget, step_budget, training_record
from cxrsyn.training.loggers import log_results_to_wandb

DATA_SUMMARY_NAME = "data_summary.json"


def build(
    cfg: DictConfig, identity: dict[str, Any] | None = None
) -> tuple[CXRDataModule, PneumoniaClassifier, pl.Trainer]:
    datamodule = build_datamodule(cfg)
    model = instantiate_node(cfg, "model")
    callbacks = [
        instantiate_node(cfg, f"callbacks.{name}")
        for name, item in (cfg.get("callbacks") or {}).items()
        if item
    ]
    loggers = [
        instantiate_node(cfg, f"logger.{name}", **wandb_identity(item, identity or {}))
        for name, item in (cfg.get("logger") or {}).items()
        if item
    ]
    if not loggers:  # the learning-rate monitor has nowhere to write without a logger
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    # the step budget is the model's to keep (PneumoniaClassifier.step_budget): Lightning's max_steps stays off
    trainer = instantiate_node(cfg, "trainer", callbacks=callbacks, logger=loggers or False, max_steps=-1)
    model.step_budget = step_budget(check_budget(cfg))
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Fit and test; on the global-zero process returns (and writes) the metrics, elsewhere None. The run
    folder is locked for the whole run, and a finished run in it is never overwritten (see
    ``cxrsyn.core.runfolder``)."""
    output_dir = Path(cfg.paths.output_dir)
    with exclusive(output_dir, "cxrsyn.train"):
        check_finished(output_dir, cfg)
        return _train(cfg, output_dir)


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    quiet_third_party_noise()
    restore_start_method()
    torch.set_num_threads(max(1, int(cfg.get("num_threads") or usable_cores())))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    config = resolved_config(cfg)
    identity = run_identity(cfg)
    position = study_position()
    if position:
        print(f"study:       {position}: {' '.join(identity['swept']) or 'no swept overrides'}", flush=True)
    cell = excluded_cell(cfg, identity["overrides"])
    if cell is not None:
        print(
            f"study:       not run: experiment.exclude names {','.join(cell)} (a grid point that does not exist)"
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / EXCLUDED_NAME, {"cell": cell, "run": identity})
        return None
    budget = check_budget(cfg)
    datamodule, model, trainer = build(cfg, identity)
    identity["init"] = initial_weights(cfg, model, output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), output_dir / RESOLVED_CONFIG_NAME)
    for logger in trainer.loggers:
        logger.log_hyperparams(config)

    started = time.time()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        raise CxrsynError(
            f"training was interrupted; resume with the same command plus "
            f"hydra.run.dir={output_dir} ckpt_path=last"
        )
    training = training_record(trainer, model, datamodule, budget)  # before testing loads other weights
    test_ckpt = cfg.get("test_ckpt", "last")
    if test_ckpt not in ("best", "last"):
        raise CxrsynError(f"test_ckpt={test_ckpt!r}: use last (the weights after max_epochs) or best")
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)
    tested_path = Path(trainer.ckpt_path) if trainer.ckpt_path else None
    # the tested weights on the validation split: the operating threshold is fixed there, never on a test set
    trainer.validate(model, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    checkpoint_info = tested_checkpoint(trainer, output_dir, test_ckpt, tested_path)
    # every result file is written into a staging folder and moved into place with metrics.json last
    with publishing(output_dir, METRICS_NAME) as publication:
        staging = publication.staging
        lists = datamodule.save_lists(staging)
        datamodule.save_summary(staging / DATA_SUMMARY_NAME)
        validation = validation_results(staging, datamodule, model, checkpoint_info.get("sha256"))
        extra = {
            "run": identity,
            "epochs_trained": trainer.current_epoch,
            "training": training,
            "validation": validation,
            "validation_saturated": validation.get("saturated"),
            "validation_threshold": validation.get("threshold"),
            "lists": lists,
        }
        metrics = collect_results(
            staging, datamodule, model, checkpoint_info, time.time() - started, extra, cfg
        )
        gradcam = settings_at(cfg, "gradcam")
        if gradcam.pop("enabled", False):
            metrics["gradcam"] = gradcam_for_run(staging, datamodule, model, metrics, gradcam)
        metrics = publication.write_manifest(metrics)
    print_results(output_dir, metrics)
    log_results_to_wandb(trainer.loggers, output_dir, metrics)
    return metrics


def initial_weights(cfg: DictConfig, model: PneumoniaClassifier, output_dir: Path) -> dict[str, Any] | None:
    """Start ``model`` from other weights: ``init_from`` (a checkpoint of an earlier run) or ``pretrain`` (a
    first stage in this job, ``pretraining``); ``init_part`` says which tensors. What was loaded goes into
    the run identity."""
    init_from, stage = cfg.get("init_from"), cfg.get("pretrain")
    if stage is not None and not stage.get("enabled", True):  # the study's from-the-usual-start arm
        stage = None
    if init_from and stage:
        raise CxrsynError("init_from and pretrain are both set; give one (pretrain makes its own init_from)")
    if not init_from and not stage:
        return None
    from cxrsyn.models.checkpoints import initialize_from

    path, done = pretraining(cfg, output_dir) if stage else (Path(str(init_from)), None)
    loaded = initialize_from(model, path, str(cfg.get("init_part") or "backbone"))
    loaded["path"] = _relative(Path(loaded["path"]), output_dir)
    if done is not None:
        loaded["pretrain"] = done
    print(
        f"init:        {loaded['part']} weights from {loaded['path']} (epoch {loaded['epoch']})", flush=True
    )
    return loaded


PRETRAIN_DIRNAME = "pretrain"


def pretraining(cfg: DictConfig, output_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The ``pretrain`` stage of a two-stage job: fit a fresh model on ``pretrain.data`` for
    ``pretrain.max_steps`` optimiser steps or ``pretrain.max_epochs`` epochs (one of them; same model,
    datamodule and seed; no test sets) under ``<run>/pretrain/``, and return its last checkpoint and what it
    trained on (``training``: steps, images seen, epochs). A finished stage is reused; a crashed one resumes
    from its last.ckpt."""
    folder = output_dir / PRETRAIN_DIRNAME
    last = folder / "checkpoints" / "last.ckpt"
    done = folder / "done.json"
    if done.is_file() and last.is_file():
        return last, json.loads(done.read_text())
    stage = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # paths follow output_dir below
    stage.data = stage.pretrain.data
    stage.test_sets = {}
    stage.paths.output_dir = str(folder)
    stage.trainer.max_steps, stage.trainer.max_epochs = pretrain_budget(cfg.pretrain)
    stage.pretrain = None
    stage.init_from = None
    datamodule = build_datamodule(stage)
    model = instantiate_node(stage, "model")
    checkpoint = instantiate_node(stage, "callbacks.last_checkpoint")
    trainer = instantiate_node(stage, "trainer", callbacks=[checkpoint], logger=False, max_steps=-1)
    model.step_budget = step_budget({"max_steps": stage.trainer.max_steps})
    length = (
        f"{stage.trainer.max_steps} step(s)"
        if stage.trainer.max_steps > 0
        else f"{stage.trainer.max_epochs} epoch(s)"
    )
    print(f"pretrain:    {length} under {folder}", flush=True)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    budget = {
        "held_equal": None,
        "max_steps": stage.trainer.max_steps,
        "max_epochs": stage.trainer.max_epochs,
    }
    record = {
        "max_epochs": int(stage.trainer.max_epochs),
        "max_steps": int(stage.trainer.max_steps),
        "epochs_trained": int(trainer.current_epoch),
        "training": training_record(trainer, model, datamodule, budget),
        "train": datamodule.summary.get("train"),
        "sources": datamodule.summary.get("mix"),
    }
    if trainer.is_global_zero:
        datamodule.save_lists(folder)
        write_json(done, record)
    return last, record


def pretrain_budget(section: DictConfig) -> tuple[int, int]:
    """``(max_steps, max_epochs)`` of the pretraining stage (-1: no limit): ``pretrain.max_steps`` or
    ``pretrain.max_epochs``, exactly one of them set."""
    steps, epochs = section.get("max_steps"), section.get("max_epochs")
    steps, epochs = (-1 if value is None else int(value) for value in (steps, epochs))
    if (steps > 0) == (epochs > 0):
        raise CxrsynError(
            f"pretrain.max_steps={steps}, pretrain.max_epochs={epochs}: give the first stage one budget, "
            "pretrain.max_steps=N (optimiser steps) or pretrain.max_epochs=N, and null the other"
        )
    return steps, epochs


def gradcam_for_run(
    output_dir: Path, datamodule: CXRDataModule, model: PneumoniaClassifier, metrics: dict, settings: dict
) -> dict[str, Any]:
    """Grad-CAM grids and bottom-band shares of every test set under ``gradcam/``, with the tested weights
    and the threshold fixed on the validation split (0.5 without one)."""
    from cxrsyn.evaluation.gradcam import gradcam_for_test_set

    threshold = (metrics.get("validation_threshold") or {}).get("value", 0.5)
    results = {}
    for name in datamodule.test_set_names:
        table = read_csv(output_dir / metrics["test_sets"][name]["predictions"])
        result = gradcam_for_test_set(
            model,
            datamodule.dataset(f"test/{name}"),
            table,
            threshold,
            output_dir / "gradcam",
            name,
            input_geometry=(
                datamodule.image_size,
                datamodule.resize,
                datamodule.test_sources[name].crop_bottom_fraction,
            ),
            **settings,
        )
        result.update(grid=f"gradcam/{result['grid']}", cams=f"gradcam/{result['cams']}")
        results[name] = result
        share = result["bottom_band_share"]
        mean = "n/a (all maps zero)" if share["mean"] is None else f"{share['mean']:.3f}"
        print(f"grad-cam:    {name}: share of CAM mass in the bottom {result['band_fraction']:.0%}: {mean}")
    return results


def wandb_identity(logger_cfg: DictConfig, identity: dict[str, Any]) -> dict[str, Any]:
    """For a W&B logger config: group by experiment, tag by arm and seed, name the run after both, unless the
    config sets them itself. Every multirun job is its own W&B run."""
    if "wandb" not in str(logger_cfg.get("_target_", "")) or not identity:
        return {}
    arm = [item for item in identity["swept"] if not item.startswith("seed=")]
    tags = [*(logger_cfg.get("tags") or []), *arm, f"seed={identity['seed']}", f"source={identity['source']}"]
    name = "-".join([identity["experiment"] or "train", *arm, f"seed{identity['seed']}"])
    return {
        "group": logger_cfg.get("group") or identity["experiment"],
        "tags": tags,
        "name": logger_cfg.get("name") or name,
    }


def study_position() -> str | None:
    """``job k of n`` inside a multirun (n from the sweep's overrides, as Hydra's basic sweeper expands them:
    ``hydra.sweeper.params`` with the command line's sweeps on top), ``job k`` when n cannot be read."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    number = int(hydra_cfg.job.num) + 1
    try:
        sweeps = {
            str(key): f"{key}={value}" for key, value in (hydra_cfg.sweeper.get("params") or {}).items()
        }
        saved = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
        for item in OmegaConf.load(saved).hydra.overrides.task if saved.is_file() else []:
            sweeps[str(item).split("=", 1)[0].lstrip("+~")] = str(item)
        parsed = OverridesParser.create().parse_overrides(list(sweeps.values()))
        total = math.prod(len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override())
    except Exception:  # noqa: BLE001 - the count is a courtesy; never fail a job over it
        return f"job {number}"
    return f"job {number} of {total}"


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """Which study, arm and seed a run belongs to: ``metrics.json`` ``run``, W&B group and tags, the report.
    ``overrides`` are the job's command-line and sweep overrides (secrets removed); ``swept`` the ones its
    experiment file sweeps (``hydra.sweeper.params``); the report finds every varied override itself."""
    experiment = cfg.get("experiment") or {}
    identity: dict[str, Any] = {
        "experiment": experiment.get("name"),
        "source": cfg.get("source", "real"),
        "seed": int(cfg.seed),
        "train_data": None,
        "overrides": [],
        "swept": [],
        "code": code_version(),
        "environment": environment(),
    }
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        identity["train_data"] = hydra_cfg.runtime.choices.get("data")
        overrides = redact_overrides([str(item) for item in hydra_cfg.overrides.task])
        swept_keys = {str(key) for key in (hydra_cfg.sweeper.get("params") or {})}
        identity["overrides"] = overrides
        identity["swept"] = [item for item in overrides if item.split("=", 1)[0] in swept_keys]
    return identity


def tested_checkpoint(
    trainer: pl.Trainer, output_dir: Path, test_ckpt: str, tested_path: Path | None
) -> dict[str, Any]:
    """What metrics.json says about the tested weights: which rule chose them, the file actually loaded
    (path relative to the run folder, sha256), and the best checkpoint by the monitored score."""
    callback = trainer.checkpoint_callback
    best_path = getattr(callback, "best_model_path", "") or ""
    info: dict[str, Any] = {
        "tested": test_ckpt,
        "path": _relative(tested_path, output_dir) if tested_path else None,
        "sha256": sha256_of_file(tested_path) if tested_path and tested_path.is_file() else None,
        "monitor": getattr(callback, "monitor", None),
        "best_path": _relative(Path(best_path), output_dir) if best_path else None,
        "best_score": _float_or_none(getattr(callback, "best_model_score", None)),
    }
    return info


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def validation_results(
    output_dir: Path, datamodule: CXRDataModule, model: PneumoniaClassifier, checkpoint_sha256: str | None
) -> dict[str, Any]:
    """``predictions/val.csv`` of the tested weights, their validation AUROC and AUPR, whether the split is
    separated perfectly (``saturated``: any threshold in a whole interval is then "optimal", so the
    transferred threshold is arbitrary), and the threshold fixed there (Youden's J, midpoint of its plateau)."""
    predictions = model.val_predictions
    if predictions is None or not len(predictions.labels):
        return {}
    table = predictions_table(datamodule.tables["val"], predictions.indices, predictions.probs)
    path = write_predictions(output_dir, "val", table)
    result: dict[str, Any] = {**binary_metrics(predictions.labels, predictions.probs)}
    result["predictions"] = str(path.relative_to(output_dir))
    threshold = validation_threshold(predictions, checkpoint_sha256)
    result["saturated"] = bool(result["auroc"] == 1.0)
    result["threshold"] = threshold
    if result["saturated"]:
        print(
            f"validation:  the tested weights separate the {result['n']} validation images perfectly (AUROC "
            "1.0): the transferred threshold (midpoint of the separating interval) is arbitrary; read the "
            "threshold metrics of the test sets with that in mind"
        )
    return result


def validation_threshold(predictions: Any, checkpoint_sha256: str | None = None) -> dict[str, Any] | None:
    """Youden's J threshold on the validation split (the synthetic data), or None without both classes.
    ``checkpoint_sha256`` names the weights it belongs to (``cxrsyn.evaluate`` reuses it only for them)."""
    if predictions is None or len(np.unique(predictions.labels)) < 2:
        return None
    return {
        "value": youden_threshold(predictions.labels, predictions.probs),
        "method": "Youden's J on the validation split of the training data, with the tested weights "
        "(midpoint of the maximising interval)",
        "n": int(len(predictions.labels)),
        "checkpoint_sha256": checkpoint_sha256,
    }


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
