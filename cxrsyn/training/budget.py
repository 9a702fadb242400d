"""How long a run trains, and what a study holds equal between its arms.

A study's arms differ in what they train on, and often in how many images that is: a fixed number of epochs
then gives the larger arms more optimiser steps, and a curve against the number of images mixes data with
training length. So each study says which quantity its arms share (``experiment.held_equal``):

- ``steps``: every arm takes ``trainer.max_steps`` optimiser steps (``trainer.max_epochs: -1``); the
  learning-rate schedule (``model.warmup_steps``, then a cosine) is laid over those steps, and a budget that
  ends inside an epoch validates and checkpoints the final weights there. The model stops at the budget
  (``PneumoniaClassifier.step_budget``), not Lightning's ``max_steps``, so a resumed run restarts at an epoch's
  end as an epoch budget does and reproduces the uninterrupted run.
- ``epochs``: every arm makes ``trainer.max_epochs`` passes over its training split (``trainer.max_steps:
  -1``): equal steps only where the arms have equally many images.

Every run records what it took in metrics.json ``training`` (``training_record``); the report shows steps per
arm and warns when a study's arms did not take the same number of what it holds equal.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cxrsyn.core.errors import CxrsynError

HELD_EQUAL = ("steps", "epochs")


def _limit(value: Any) -> int:
    """A Lightning loop limit as an int; null and -1 both mean no limit (-1)."""
    return -1 if value is None else int(value)


def check_budget(cfg: DictConfig) -> dict[str, Any]:
    """The run's budget (``held_equal``, ``max_steps``, ``max_epochs``), or one line saying what to fix: a
    study that holds steps equal takes its budget from ``trainer.max_steps`` alone (a ``trainer.max_epochs``
    on top would end some arms early), one that holds epochs equal from ``trainer.max_epochs`` alone."""
    trainer = cfg.get("trainer") or {}
    max_steps, max_epochs = _limit(trainer.get("max_steps")), _limit(trainer.get("max_epochs"))
    experiment = cfg.get("experiment") or {}
    held_equal = experiment.get("held_equal")
    name = experiment.get("name") or "this experiment"
    if held_equal is not None and held_equal not in HELD_EQUAL:
        raise CxrsynError(f"experiment.held_equal={held_equal!r}: use one of {', '.join(HELD_EQUAL)}")
    if held_equal == "steps" and (max_steps <= 0 or max_epochs != -1):
        raise CxrsynError(
            f"{name} holds optimiser steps equal between its arms (experiment.held_equal=steps), so its budget "
            f"is trainer.max_steps alone (now max_steps={max_steps}, max_epochs={max_epochs}): set "
            "trainer.max_steps=N and leave trainer.max_epochs at -1, or give experiment.held_equal=epochs "
            "trainer.max_steps=-1 trainer.max_epochs=N"
        )
    if held_equal == "epochs" and (max_epochs <= 0 or max_steps != -1):
        raise CxrsynError(
            f"{name} holds epochs equal between its arms (experiment.held_equal=epochs), so its budget is "
            f"trainer.max_epochs alone (now max_epochs={max_epochs}, max_steps={max_steps}): set "
            "trainer.max_epochs=N and trainer.max_steps=-1"
        )
    if max_steps <= 0 and max_epochs <= 0:
        raise CxrsynError(
            f"no training budget (trainer.max_steps={max_steps}, trainer.max_epochs={max_epochs}): set one of them"
        )
    return {"held_equal": held_equal, "max_steps": max_steps, "max_epochs": max_epochs}


def step_budget(budget: dict[str, Any]) -> int | None:
    """The optimiser steps to stop at (``max_steps`` of a budget), or None for an epoch budget."""
    return int(budget["max_steps"]) if int(budget["max_steps"]) > 0 else None


def training_record(trainer: Any, model: Any, datamodule: Any, budget: dict[str, Any]) -> dict[str, Any]:
    """What the run trained for (metrics.json ``training``): optimiser ``steps``, ``images_seen`` (every
    process's, copies included), ``epochs`` (passes over the training split: images seen / its size, so a
    budget ending inside an epoch gives a fraction), ``epochs_started``, the split's size, the batch size,
    and the learning-rate schedule's ``warmup_steps`` and ``schedule_steps``."""
    train_images = len(datamodule.tables["train"]) if "train" in datamodule.tables else 0
    images_seen = int(model.images_seen) * int(trainer.world_size)
    schedule = getattr(model, "schedule", {}) or {}
    return {
        **budget,
        "steps": int(trainer.global_step),
        "epochs": round(images_seen / train_images, 4) if train_images else None,
        "epochs_started": int(trainer.current_epoch),
        "images_seen": images_seen,
        "train_images": train_images,
        "batch_size": int(datamodule.batch_size),
        "steps_per_epoch": int(schedule["steps_per_epoch"]) if "steps_per_epoch" in schedule else None,
        "warmup_steps": schedule.get("warmup_steps"),
        "schedule_steps": schedule.get("total_steps"),
    }
