"""The auditor and feature extractors: torchxrayvision from a local file, the offline message, timm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrsyn.auditing.models import PixelAuditor, TimmExtractor, TorchXRayVisionAuditor
from cxrsyn.core.errors import CxrsynError

CHEX_LABELS = [
    "Atelectasis", "Consolidation", "", "Pneumothorax", "Edema", "", "", "Effusion", "Pneumonia", "",
    "Cardiomegaly", "", "", "", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
]  # fmt: skip


@pytest.fixture(scope="module")
def xrv_weights(tmp_path_factory):
    """A DenseNet-121 of torchxrayvision with random weights, saved as a local weights file."""
    import torchxrayvision as xrv

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("xrv") / "densenet.pt"
    torch.save(xrv.models.DenseNet(weights=None).state_dict(), path)
    return path


def test_torchxrayvision_auditor_from_a_local_file(xrv_weights):
    auditor = TorchXRayVisionAuditor(weights_path=str(xrv_weights), input_size=64)
    assert auditor.pathologies == CHEX_LABELS
    images = torch.rand(2, 1, 80, 72)
    scores = auditor.scores(images)
    assert scores.shape == (2, 18) and bool(((scores >= 0) & (scores <= 1))[:, [1, 8, 16]].all())
    assert auditor.embed(images).shape == (2, 1024)
    # torchxrayvision's own forward on its input scale gives the same scores
    inputs = (
        torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear", antialias=True) * 2048 - 1024
    )
    with torch.no_grad():
        assert torch.allclose(auditor.model(inputs), scores, atol=1e-6)


def test_missing_weights_offline_say_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CxrsynError) as error:
        TorchXRayVisionAuditor(cache_dir=str(tmp_path / "cache"))
    line = str(error.value)
    assert "\n" not in line
    assert "https://github.com/mlmed/torchxrayvision/releases/download/v1/chex-densenet121" in line
    assert str(tmp_path / "cache" / "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt") in line
    assert "auditor.weights_path" in line


def test_foreign_weights_file_is_one_line(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CxrsynError, match="is not a torchxrayvision DenseNet-121 weights file"):
        TorchXRayVisionAuditor(weights_path=str(path))


def test_timm_extractor_gives_pooled_features():
    extractor = TimmExtractor("test_resnet", input_size=32)
    features = extractor.embed(torch.rand(3, 1, 40, 40))
    assert features.shape[0] == 3 and features.ndim == 2
    assert extractor.identity.startswith("timm:test_resnet:random")


def test_pixel_auditor_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((20, 1, 32, 32)).astype(np.float32))
    labels = np.repeat([0, 1], 10)
    images[labels == 1, :, 8:16, 8:16] += 0.5
    fitted = PixelAuditor().fit(images, labels)
    fitted.save(tmp_path / "auditor.pt")
    loaded = PixelAuditor(weights_path=str(tmp_path / "auditor.pt"))
    assert torch.allclose(loaded.scores(images), fitted.scores(images))
    scores = loaded.scores(images)[:, 0].numpy()
    assert scores[labels == 1].min() > scores[labels == 0].max()
