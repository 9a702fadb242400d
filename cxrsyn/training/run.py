"""One training run from a composed config: fit, test on every test set, write the results."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.errors import CxrsynError
from cxrsyn.evaluation.metrics import youden_threshold
from cxrsyn.evaluation.outputs import (
    METRICS_NAME,
    predictions_table,
    subgroup_metrics,
    test_set_metrics,
    write_json,
    write_predictions,
)
from cxrsyn.models.classifier import PneumoniaClassifier
from cxrsyn.secrets import redact, redact_overrides
from cxrsyn.training.loggers import log_results_to_wandb

RESOLVED_CONFIG_NAME = "config.yaml"
DATA_SUMMARY_NAME = "data_summary.json"


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved and secrets removed: what is saved and logged."""
    return redact(OmegaConf.to_container(cfg, resolve=True))


SOURCES = ("real", "phantom")
STAND_IN_KEY = "phantom"


def source_node(cfg: DictConfig, key: str) -> Any:
    """The config at ``key`` for the chosen ``source``. A dataset config may carry its phantom stand-in under
    ``phantom:``; with ``source=phantom`` that stand-in is used, with ``source=real`` the dataset itself."""
    node = OmegaConf.select(cfg, key)
    source = cfg.get("source", "real")
    if source not in SOURCES:
        raise CxrsynError(f"source={source!r} is unknown; use one of {', '.join(SOURCES)}")
    if not isinstance(node, DictConfig) or STAND_IN_KEY not in node or "_target_" not in node:
        return node
    if source == "phantom":
        return node[STAND_IN_KEY]
    resolved = OmegaConf.to_container(node, resolve=True)
    del resolved[STAND_IN_KEY]
    return OmegaConf.create(resolved)


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(cfg[key])`` (for datasets, see ``source_node``), with known failures as
    one line naming the config key."""
    try:
        return instantiate(source_node(cfg, key), **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, CxrsynError):
            raise cause from None
        if isinstance(cause, TypeError):  # unknown or missing arguments in a config file or override
            raise CxrsynError(f"config '{key}': {cause}; fix the key in conf/ or in your overrides") from None
        raise


def build_datamodule(
    cfg: DictConfig, train_source: bool = True, test_sets: dict[str, Any] | None = None
) -> CXRDataModule:
    """The DataModule from ``datamodule``, with ``data`` as its training source (unless ``train_source`` is
    False) and every ``test_sets`` entry (unless ``test_sets`` gives them)."""
    train = instantiate_node(cfg, "data", _convert_="object") if train_source else None
    if test_sets is None:
        test_sets = {
            str(name): instantiate_node(cfg, f"test_sets.{name}", _convert_="object")
            for name in (cfg.get("test_sets") or {})
        }
    # partial, then called: sources are objects already, which Hydra would merge back into config nodes
    make_datamodule = instantiate_node(cfg, "datamodule", _partial_=True)
    try:
        return make_datamodule(train=train, test_sets=test_sets)
    except TypeError as error:
        raise CxrsynError(
            f"config 'datamodule': {error}; fix the key in conf/ or in your overrides"
        ) from None


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
    trainer = instantiate_node(cfg, "trainer", callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Fit and test; on the global-zero process returns (and writes) the metrics, elsewhere None."""
    torch.set_num_threads(max(1, int(cfg.get("num_threads") or os.cpu_count() or 1)))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    config = resolved_config(cfg)
    identity = run_identity(cfg)
    datamodule, model, trainer = build(cfg, identity)
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
    test_ckpt = cfg.get("test_ckpt", "best")
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)
    # the tested weights on the validation split: the operating threshold is fixed there, never on a test set
    trainer.validate(model, datamodule=datamodule, verbose=False)
    threshold = validation_threshold(model.val_predictions)
    if not trainer.is_global_zero:
        return None
    datamodule.save_summary(output_dir / DATA_SUMMARY_NAME)
    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "") or ""
    checkpoint_info = {
        "tested": test_ckpt,
        "path": str(Path(best_path).relative_to(output_dir))
        if best_path.startswith(str(output_dir))
        else best_path,
        "monitor": getattr(checkpoint, "monitor", None),
        "best_score": _float_or_none(getattr(checkpoint, "best_model_score", None)),
    }
    extra = {"run": identity, "epochs_trained": trainer.current_epoch, "validation_threshold": threshold}
    metrics = write_results(output_dir, datamodule, model, checkpoint_info, time.time() - started, extra, cfg)
    gradcam = settings_at(cfg, "gradcam")
    if gradcam.pop("enabled", False):
        metrics["gradcam"] = gradcam_for_run(output_dir, datamodule, model, metrics, gradcam)
        write_json(output_dir / METRICS_NAME, metrics)
    log_results_to_wandb(trainer.loggers, output_dir, metrics)
    return metrics


def gradcam_for_run(
    output_dir: Path, datamodule: CXRDataModule, model: PneumoniaClassifier, metrics: dict, settings: dict
) -> dict[str, Any]:
    """Grad-CAM grids and bottom-band shares of every test set under ``gradcam/``, with the tested weights
    and the threshold fixed on the validation split (0.5 without one)."""
    from cxrsyn.evaluation.gradcam import gradcam_for_test_set

    threshold = (metrics.get("validation_threshold") or {}).get("value", 0.5)
    results = {}
    for name in datamodule.test_set_names:
        table = pd.read_csv(output_dir / metrics["test_sets"][name]["predictions"])
        result = gradcam_for_test_set(
            model,
            datamodule.dataset(f"test/{name}"),
            table,
            threshold,
            output_dir / "gradcam",
            name,
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
    }
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        identity["train_data"] = hydra_cfg.runtime.choices.get("data")
        overrides = redact_overrides([str(item) for item in hydra_cfg.overrides.task])
        swept_keys = {str(key) for key in (hydra_cfg.sweeper.get("params") or {})}
        identity["overrides"] = overrides
        identity["swept"] = [item for item in overrides if item.split("=", 1)[0] in swept_keys]
    return identity


def validation_threshold(predictions: Any) -> dict[str, Any] | None:
    """Youden's J threshold on the validation split (the synthetic data), or None without both classes."""
    if predictions is None or len(np.unique(predictions.labels)) < 2:
        return None
    return {
        "value": youden_threshold(predictions.labels, predictions.probs),
        "method": "Youden's J on the validation split of the training data, with the tested weights",
        "n": int(len(predictions.labels)),
    }


def settings_at(cfg: DictConfig, key: str) -> dict[str, Any]:
    """The config section at ``key`` as plain, resolved values ({} when absent or null)."""
    settings = OmegaConf.select(cfg, key)
    return dict(OmegaConf.to_container(settings, resolve=True)) if settings else {}


def bootstrap_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """``evaluation.bootstrap`` of the config as plain values (null or n_resamples 0: no CIs)."""
    settings = settings_at(cfg, "evaluation.bootstrap")
    return settings if settings.get("n_resamples") else None


def write_results(
    output_dir: Path,
    datamodule: CXRDataModule,
    model: PneumoniaClassifier,
    checkpoint: dict[str, Any],
    seconds: float,
    extra: dict[str, Any] | None = None,
    cfg: DictConfig | None = None,
) -> dict[str, Any]:
    """``predictions/<set>.csv`` and ``metrics.json`` (per test set n, n_pos, n_neg, AUROC, AUPR, subgroups,
    thresholds, calibration, skipped); CIs and subgroups as ``evaluation`` in ``cfg`` sets them."""
    bootstrap = bootstrap_settings(cfg) if cfg is not None else None
    subgroups = settings_at(cfg, "evaluation.subgroups") if cfg is not None else {}
    test_sets: dict[str, Any] = {}
    for name in datamodule.test_set_names:
        predictions = model.test_predictions[name]
        table = predictions_table(datamodule.tables[name], predictions.indices, predictions.probs)
        path = write_predictions(output_dir, name, table)
        skipped = datamodule.summary["test_sets"][name]["skipped"]
        test_sets[name] = {
            **test_set_metrics(table, bootstrap, (extra or {}).get("validation_threshold")),
            "subgroups": subgroup_metrics(
                table, subgroups.get("columns", ()), bootstrap, subgroups.get("min_per_class", 10)
            ),
            "predictions": str(path.relative_to(output_dir)),
            "skipped": skipped,
        }
        note = datamodule.summary["test_sets"][name].get("found", {}).get("note")
        if note:  # e.g. NIH contains RSNA's images: its results are not independent of RSNA's
            test_sets[name]["note"] = note
    metrics = {
        "test_sets": test_sets,
        "checkpoint": checkpoint,
        **(extra or {}),
        "seconds": round(seconds, 1),
        "data": datamodule.summary,
    }
    write_json(output_dir / METRICS_NAME, metrics)
    print_results(output_dir, metrics)
    return metrics


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@rank_zero_only
def print_results(output_dir: Path, metrics: dict[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:.3f}"

    def with_ci(result: dict[str, Any], key: str) -> str:
        ci = result.get(f"{key}_ci")
        return fmt(result[key]) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")

    rows = [f"{'test set':<24} {'n':>7} {'n_pos':>7} {'AUROC (95% CI)':>22} {'AUPR (95% CI)':>22}"]
    for name, result in metrics["test_sets"].items():
        rows.append(
            f"{name:<24} {result['n']:>7} {result['n_pos']:>7} {with_ci(result, 'auroc'):>22} "
            f"{with_ci(result, 'aupr'):>22}"
        )
    print("\n".join(["", "results (positive class = pneumonia):", *rows, ""]))
    print(f"run folder:  {output_dir}")
    print(f"metrics:     {output_dir / METRICS_NAME}")
    print(f"predictions: {output_dir / 'predictions'}/<test set>.csv")
    if metrics["checkpoint"].get("monitor"):
        print(
            f"checkpoints: {output_dir / 'checkpoints'} (best by {metrics['checkpoint']['monitor']}, and last.ckpt)"
        )
    for name, result in metrics["test_sets"].items():
        if result.get("note"):
            print(f"note:        {name}: {result['note']}")
        if result["skipped"]:
            print(f"skipped:     {len(result['skipped'])} file(s) of {name}, listed in metrics.json")
