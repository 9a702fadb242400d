"""The pneumonia classifier: a timm backbone with one logit, BCE loss, AdamW with warmup and cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.seeding import derive_seed
from cxrsyn.models.backbone import create_backbone, input_normalisation

IMAGES_SEEN_KEY = "cxrsyn_images_seen"  # in a checkpoint: training images this process had stepped over


@dataclass
class Predictions:
    """Per-sample outputs of one evaluation pass, gathered from every rank, one entry per sample."""

    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray


@dataclass
class _Outputs:
    indices: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)


class PneumoniaClassifier(pl.LightningModule):
    """Binary classifier (1 = pneumonia) over 1-channel radiographs.

    ``pos_weight``: None (plain BCE), a number, or ``"balanced"`` (n_normal / n_pneumonia of the training
    split). The learning rate warms up linearly for ``warmup_steps`` optimiser steps (None: ``warmup_epochs``
    of the training split) then follows a cosine to ``lr * min_lr_ratio`` at the end of the budget
    (``step_budget``, the run's ``trainer.max_steps``, else ``trainer.max_epochs``); both are stepped per
    optimiser step. With a step
    budget, give the warmup in steps, so arms with more images per epoch warm up for as long as the others.
    ``freeze_backbone``: only the classifier head trains (a linear probe; the backbone's batch-norm statistics
    stay as loaded).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool = True,
        weights_path: str | None = None,
        in_chans: int = 1,
        drop_rate: float = 0.0,
        lr: float = 3e-4,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.01,
        pos_weight: float | str | None = None,
        seed: int = 0,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        if isinstance(pos_weight, str) and pos_weight != "balanced":
            raise CxrsynError(f"model.pos_weight={pos_weight!r}: use a number, 'balanced' or null")
        self.save_hyperparameters()
        self.net = create_backbone(backbone, pretrained, weights_path, in_chans, drop_rate)
        mean, std = input_normalisation(self.net)
        self.register_buffer("input_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("input_std", torch.tensor(std), persistent=False)
        self.register_buffer("pos_weight", torch.tensor(1.0))
        self.test_set_names: list[str] = []
        self.test_predictions: dict[str, Predictions] = {}
        self.val_predictions: Predictions | None = None
        self._outputs: dict[int, _Outputs] = {}
        self.images_seen = 0  # training images this process has stepped over (restored on resume)
        # Optimiser steps to train for (trainer.max_steps, handed over by cxrsyn.training.run). Not Lightning's
        # own max_steps: with it, Lightning resumes "iteration-based", restarting inside the epoch an
        # end-of-epoch checkpoint closed, which shifts the data order and does not reproduce the run.
        self.step_budget: int | None = None
        self.schedule: dict[
            str, float
        ] = {}  # the learning-rate schedule's length, set by configure_optimizers

    # ---------------------------------------------------------------------------------------------- model
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,), float32, for images in [0, 1] of shape (batch, 1, H, W).

        The backbone's features may come in a mixed-precision dtype (bf16-mixed); pooling and the linear
        head run in float32, so logits (and the probabilities written from them) are not quantised to
        bf16's 8 significant bits, which would make most of a large test set's scores tie."""
        features = self.net.forward_features((images - self.input_mean) / self.input_std)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.net.forward_head(features.float()).squeeze(1)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.hparams.pos_weight is not None:
            if self.hparams.pos_weight == "balanced":
                counts = datamodule.train_label_counts()
                self.pos_weight.fill_(counts["n_neg"] / counts["n_pos"])
            else:
                self.pos_weight.fill_(float(self.hparams.pos_weight))
        if datamodule is not None and hasattr(datamodule, "test_set_names"):
            self.test_set_names = list(datamodule.test_set_names)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # Dropout and other in-model randomness restart from (seed, step, rank) at every step. The global RNG
        # is also drawn by DataLoader iterators, differently for a fresh iterator (after a resume) than for a
        # reused one, so seeding once per run or per epoch would not reproduce an uninterrupted run.
        torch.manual_seed(derive_seed(self.hparams.seed, self.global_step, self.global_rank))
        if self.hparams.get(
            "freeze_backbone"
        ):  # per step: Lightning restores modules' train modes after validation
            self.net.eval()
            self.net.get_classifier().train()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"], pos_weight=self.pos_weight)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        self.images_seen += len(logits)
        return loss

    def on_train_start(self) -> None:
        self._stop_at_budget()  # a resumed run that has taken its budget trains no further

    def on_train_batch_end(self, outputs: Any, batch: dict, batch_idx: int) -> None:
        self._stop_at_budget()

    def _stop_at_budget(self) -> None:
        """End fitting once ``step_budget`` optimiser steps are taken. Through ``should_stop``, Lightning
        validates right there even inside an epoch, and checkpoints follow as at an epoch's end, so last.ckpt
        holds the weights after exactly the budget and they are scored on the validation split."""
        if self.step_budget is not None and self.global_step >= self.step_budget:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[IMAGES_SEEN_KEY] = self.images_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.images_seen = int(checkpoint.get(IMAGES_SEEN_KEY, 0))

    # ---------------------------------------------------------------------------------------- evaluation
    def _collect(self, batch: dict, dataloader_idx: int) -> torch.Tensor:
        logits = self(batch["image"]).float()
        outputs = self._outputs.setdefault(dataloader_idx, _Outputs())
        outputs.indices.append(batch["index"].detach())
        outputs.labels.append(batch["label"].detach())
        outputs.logits.append(logits.detach())
        return logits

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self._collect(batch, 0)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"], pos_weight=self.pos_weight)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(logits))

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._outputs = {}

    def on_test_epoch_start(self) -> None:
        self._outputs = {}
        self.test_predictions = {}

    def on_validation_epoch_end(self) -> None:
        predictions = self._gather(self._outputs.pop(0, _Outputs()))
        self.val_predictions = predictions
        if self.trainer.sanity_checking:
            return
        auroc, aupr = _torchmetrics_scores(predictions)
        # every rank holds the same gathered predictions, so the mean over ranks is the value itself
        self.log("val/auroc", auroc, prog_bar=True, sync_dist=True)
        self.log("val/aupr", aupr, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        for dataloader_idx, outputs in sorted(self._outputs.items()):
            name = self._test_set_name(dataloader_idx)
            predictions = self._gather(outputs)
            self.test_predictions[name] = predictions
            auroc, aupr = _torchmetrics_scores(predictions)
            self.log(f"test/{name}/auroc", auroc, add_dataloader_idx=False, sync_dist=True)
            self.log(f"test/{name}/aupr", aupr, add_dataloader_idx=False, sync_dist=True)
        self._outputs = {}

    def _test_set_name(self, dataloader_idx: int) -> str:
        if dataloader_idx < len(self.test_set_names):
            return self.test_set_names[dataloader_idx]
        return f"test_{dataloader_idx}"

    def _gather(self, outputs: _Outputs) -> Predictions:
        """Concatenate this rank's outputs, gather every rank's, and drop the sampler's padding duplicates."""
        if not outputs.indices:
            empty = np.zeros(0)
            return Predictions(empty.astype(np.int64), empty, empty)
        local = torch.stack(
            [
                torch.cat(outputs.indices).double(),
                torch.cat(outputs.labels).double(),
                torch.cat(outputs.logits).double(),
            ]
        )
        gathered = self.all_gather(local) if self.trainer.world_size > 1 else local
        if gathered.dim() == 3:  # (world, 3, n) -> (3, world * n)
            gathered = gathered.permute(1, 0, 2).reshape(3, -1)
        indices, labels, logits = gathered.cpu().numpy()
        indices = indices.astype(np.int64)
        unique, first = np.unique(indices, return_index=True)
        probs = torch.sigmoid(torch.from_numpy(logits[first])).numpy()  # float64: no ties from rounding
        return Predictions(unique, labels[first].astype(np.int64), probs)

    # ----------------------------------------------------------------------------------------- optimiser
    def head_parameter_names(self) -> set[str]:
        """Names (in ``self.net``) of the classifier head's parameters: what is not the backbone."""
        head = self.net.get_classifier()
        ids = {id(parameter) for parameter in head.parameters()}
        return {name for name, parameter in self.net.named_parameters() if id(parameter) in ids}

    def configure_optimizers(self) -> dict:
        decay, no_decay = [], []
        head = self.head_parameter_names() if self.hparams.get("freeze_backbone") else None
        for name, parameter in self.net.named_parameters():
            if head is not None and name not in head:
                parameter.requires_grad_(False)
                continue
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        steps_per_epoch, total_steps = self._schedule_length()
        warmup = self.hparams.get("warmup_steps")
        if warmup is None:
            warmup = int(round(self.hparams.warmup_epochs * steps_per_epoch))
        elif not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise CxrsynError(
                f"model.warmup_steps={warmup!r}: give a whole number of optimiser steps, or null"
            )
        warmup_steps = max(0, min(total_steps - 1, int(warmup)))
        floor = self.hparams.min_lr_ratio
        self.schedule = {
            "warmup_steps": warmup_steps,
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
        }

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _schedule_length(self) -> tuple[float, int]:
        """Optimiser steps per epoch, from the train loader's length, and in total: ``step_budget``, or
        ``trainer.max_epochs`` epochs, whichever ends first.

        Not ``trainer.estimated_stepping_batches``: it iterates the train loader before a resumed run has
        restored its epoch counter, and Lightning then reuses that iterator, replaying epoch 0's order.
        """
        trainer = self.trainer
        batches = len(trainer.datamodule.train_dataloader()) if trainer.datamodule is not None else 0
        if not batches:
            total = max(1, int(trainer.estimated_stepping_batches))
            return total / max(1, trainer.max_epochs or 1), total
        steps_per_epoch = math.ceil(batches / max(1, trainer.accumulate_grad_batches))
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        total = steps_per_epoch * epochs if epochs else None
        if self.step_budget:
            total = self.step_budget if total is None else min(total, self.step_budget)
        return float(steps_per_epoch), max(1, total or steps_per_epoch)


def _torchmetrics_scores(predictions: Predictions) -> tuple[float, float]:
    labels = predictions.labels
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan"), float("nan")
    probs, target = torch.from_numpy(predictions.probs), torch.from_numpy(labels)
    return float(binary_auroc(probs, target)), float(binary_average_precision(probs, target))
