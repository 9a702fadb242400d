"""Fine-tuning starts from the given weights: ``init_from`` with ``init_part`` and ``freeze_backbone``."""

from __future__ import annotations

import pytest
import torch

from cxrsyn.core.errors import CxrsynError
from cxrsyn.models.checkpoints import initialize_from
from cxrsyn.models.classifier import PneumoniaClassifier


def classifier(seed: int, **kwargs) -> PneumoniaClassifier:
    torch.manual_seed(seed)
    return PneumoniaClassifier(backbone="test_resnet", pretrained=False, seed=seed, **kwargs)


def save_checkpoint(model: PneumoniaClassifier, path) -> None:
    """What Lightning writes for a cxrsyn.train run: state_dict, hyper_parameters, epoch."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(
                    torch.rand_like(tensor)
                )  # "trained": far from any initialisation (variances stay > 0)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": 4}, path)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "pretrained.ckpt"
    save_checkpoint(classifier(seed=1), path)
    return path, torch.load(path, weights_only=True)["state_dict"]


def test_backbone_weights_are_the_checkpoints_and_the_head_stays_fresh(checkpoint):
    path, saved = checkpoint
    model = classifier(seed=2)
    fresh = {key: value.clone() for key, value in model.state_dict().items()}
    loaded = initialize_from(model, path, "backbone")
    head = {f"net.{name}" for name in model.head_parameter_names()}
    assert head and loaded["part"] == "backbone" and loaded["epoch"] == 4
    for key, value in model.state_dict().items():
        if not key.startswith("net."):
            continue  # pos_weight is set from the training data, not loaded
        if key in head:
            assert torch.equal(value, fresh[key]), key  # the head keeps its seeded initialisation
        else:
            assert torch.equal(value, saved[key]), key  # equal to the checkpoint's
            if value.is_floating_point() and value.numel() > 1:
                assert not torch.equal(value, fresh[key]), key  # and changed from random
    assert loaded["tensors"] == len(model.net.state_dict()) - len(head)


def test_all_loads_the_head_too(checkpoint):
    path, saved = checkpoint
    model = classifier(seed=2)
    initialize_from(model, path, "all")
    for key, value in model.state_dict().items():
        if key.startswith("net."):
            assert torch.equal(value, saved[key]), key


def test_a_checkpoint_of_another_backbone_or_a_missing_file_is_one_line(tmp_path):
    other = PneumoniaClassifier(backbone="resnet18", pretrained=False)
    path = tmp_path / "resnet18.ckpt"
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, path)
    with pytest.raises(
        CxrsynError, match=r"holds a resnet18 but model.backbone=test_resnet; set model.backbone"
    ):
        initialize_from(classifier(0), path)
    with pytest.raises(CxrsynError, match=r"^init_from=.*nope.ckpt does not exist"):
        initialize_from(classifier(0), tmp_path / "nope.ckpt")
    with pytest.raises(CxrsynError, match=r"^init_part='head'"):
        initialize_from(classifier(0), path, "head")


def test_a_frozen_backbone_trains_only_the_head():
    """One real Lightning epoch: only the head's tensors move; batch-norm running statistics stay as loaded."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    model = classifier(seed=0, freeze_backbone=True, warmup_epochs=0)
    before = {key: value.clone() for key, value in model.net.state_dict().items()}
    batches = [
        {"image": torch.rand(1, 32, 32), "label": torch.tensor(float(i % 2)), "index": torch.tensor(i)}
        for i in range(8)
    ]
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=4))
    after = model.net.state_dict()
    changed = {key for key in after if not torch.equal(after[key], before[key])}
    assert changed == model.head_parameter_names()
