"""Evaluate a checkpoint on one test set: ``metrics.json`` and ``predictions/<name>.csv`` in the training run's
format."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from cxrsyn.core.compose import RESOLVED_CONFIG_NAME, build_datamodule, instantiate_node, resolved_config
from cxrsyn.core.environment import environment
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import sha256_of_file
from cxrsyn.core.logs import quiet_third_party_noise
from cxrsyn.core.parallel import usable_cores
from cxrsyn.core.paths import check_name
from cxrsyn.core.runfolder import check_finished, exclusive
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.evaluation.outputs import METRICS_NAME, write_results
from cxrsyn.models.checkpoints import load_checkpoint, load_model


def checkpoint_preprocessing(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``image_size`` and ``resize`` that the DataModule saved into the checkpoint during training."""
    return checkpoint.get(CXRDataModule.__qualname__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``; the run folder is locked while it is written, and results
    already there are replaced only with ``overwrite=true`` (``cxrsyn.core.runfolder``)."""
    output_dir = Path(cfg.paths.output_dir)
    with exclusive(output_dir, "cxrsyn.evaluate"):
        check_finished(output_dir, cfg)
        return _evaluate(cfg, output_dir)


def _evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    if cfg.get("name"):  # before any work: it names predictions/<name>.csv
        check_name(cfg.name, "name=")
    quiet_third_party_noise()
    torch.set_num_threads(max(1, int(cfg.get("num_threads") or usable_cores())))
    pl.seed_everything(cfg.seed, verbose=False)
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise CxrsynError(
            f"ckpt_path={ckpt_path} is not a file; give a checkpoint of a training run "
            "(e.g. <run>/checkpoints/last.ckpt or best-epoch*.ckpt)"
        )
    checkpoint = load_checkpoint(ckpt_path, "ckpt_path")  # weights_only: a foreign pickle never runs
    preprocessing = checkpoint_preprocessing(checkpoint)
    if preprocessing is not None:
        for key, value in preprocessing.items():
            OmegaConf.update(cfg, f"datamodule.{key}", value)
        print(
            f"preprocessing from the checkpoint: image_size {preprocessing['image_size']}, resize {preprocessing['resize']}"
        )
    else:
        print(
            "the checkpoint records no preprocessing; using datamodule.image_size="
            f"{cfg.datamodule.image_size} and datamodule.resize={cfg.datamodule.resize}: make sure training used them"
        )
    model = load_model(ckpt_path)
    source = instantiate_node(cfg, "data", _convert_="object")
    if cfg.get("name"):
        name = check_name(cfg.name, "name=")
    else:
        name = check_name(
            source.name, "the test set's name (data.root's folder name; set name= to rename it) "
        )
    datamodule = build_datamodule(cfg, train_source=False, test_sets={name: source})
    trainer = instantiate_node(cfg, "trainer", logger=False, callbacks=[], enable_checkpointing=False)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved_config(cfg)), output_dir / RESOLVED_CONFIG_NAME)
    started = time.time()
    trainer.test(model, datamodule=datamodule, verbose=False)
    checkpoint_info = {
        "path": str(ckpt_path),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
    }
    checkpoint_info["sha256"] = sha256_of_file(ckpt_path)
    threshold, note = run_threshold(ckpt_path, checkpoint_info["sha256"])
    print(f"threshold:   {note}")
    extra = {
        "validation_threshold": threshold,
        "validation_threshold_note": note,
        "environment": environment(),
    }
    return write_results(output_dir, datamodule, model, checkpoint_info, time.time() - started, extra, cfg)


def run_threshold(ckpt_path: Path, sha256: str) -> tuple[dict[str, Any] | None, str]:
    """The operating threshold the training run fixed on its validation split, if it was fixed with these
    very weights (the checkpoint's sha256 matches the one the run tested), and why (not)."""
    run_metrics = ckpt_path.parent.parent / METRICS_NAME
    if not run_metrics.is_file():
        return None, f"none: no training run's {METRICS_NAME} beside {ckpt_path.parent} to take it from"
    threshold = json.loads(run_metrics.read_text()).get("validation_threshold")
    if not threshold:
        return None, f"none: {run_metrics} records no validation threshold"
    recorded = threshold.get("checkpoint_sha256")
    if recorded is None:
        return (
            None,
            f"none: {run_metrics} does not say which weights its threshold belongs to (no checkpoint hash)",
        )
    if recorded != sha256:
        return None, (
            f"none: the run's threshold was fixed with other weights (sha256 {recorded[:12]}, not this "
            f"checkpoint's {sha256[:12]}); evaluate the checkpoint the run tested to reuse it"
        )
    return (
        threshold,
        f"{threshold['value']:.4g}, fixed on the run's validation split with these weights (sha256 matches)",
    )
