"""Mixed precision must not quantise the scores: the head and the sigmoid run in float32 and float64."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cxrsyn.models.classifier import PneumoniaClassifier
from tests.conftest import run_cli, tiny_overrides


def test_the_head_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = PneumoniaClassifier(backbone="test_resnet", pretrained=False).eval()
    with torch.no_grad():
        model.net.get_classifier().bias.fill_(
            3.0
        )  # logits near 3, as a trained model's: bf16 steps 1/64 there
    images = torch.rand(400, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        bf16_head = model.net((images - model.input_mean) / model.input_std).squeeze(1)
    assert logits.dtype == torch.float32 and bf16_head.dtype == torch.bfloat16
    # 400 random images: bf16 logits collapse onto a handful of values, float32 ones stay distinct
    assert len(torch.unique(bf16_head)) < 20 and len(torch.unique(logits)) >= 395


@pytest.mark.heavy
@pytest.mark.slow
def test_bf16_mixed_training_on_cpu_writes_unquantised_probabilities(tmp_path, tiny_phantom):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(
        tiny_phantom,
        **{
            "trainer.precision": "bf16-mixed",
            "test_sets.phantom_real.n_per_class": 100,
            "test_sets.phantom_real.root": tmp_path / "real_like_200",
            "gradcam.enabled": "false",
        },
    )
    result = run_cli("cxrsyn.train", *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    probs = pd.read_csv(run_dir / metrics["test_sets"]["phantom_real"]["predictions"])["prob"]
    assert len(probs) == 200 and probs.nunique() >= 195
