"""Feature spaces for the distance part: PRDC against a direct numpy implementation, each extractor from local
weights (never downloaded) equal to its library's own computation, and the one-line reasons for skipping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrsyn.auditing.distance import DistanceSettings
from cxrsyn.auditing.models import TorchXRayVisionAuditor
from cxrsyn.auditing.spaces import (
    HuggingFaceExtractor,
    InceptionExtractor,
    RandomInitExtractor,
    SpaceSettings,
    prdc,
    space_entry,
)
from cxrsyn.core.errors import CxrsynError


def prdc_numpy(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. (2020), definitions 3-6, written out with explicit distance matrices."""
    d_rr = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
    d_ff = np.sqrt(((fake[:, None] - fake[None]) ** 2).sum(-1))
    d_rf = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))
    radius_r = np.sort(d_rr, axis=1)[:, k]  # k-th neighbour, the point itself at index 0
    radius_f = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < radius_r[:, None]  # fake j in the ball of real i
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d_rf < radius_f[None, :]).any(axis=1).mean()),
        "density": float(inside.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) < radius_r).mean()),
    }


def test_prdc_matches_a_direct_numpy_implementation():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 5))
    fake = rng.normal(0.5, 1.3, size=(45, 5))
    assert prdc(real, fake, 3) == pytest.approx(prdc_numpy(real, fake, 3), abs=1e-6)
    same = prdc(real, real + 1e-9, 5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert prdc(real[:4], fake, 5) is None  # fewer than k + 1 points


def test_space_entry_has_kid_with_ci_fid_and_prdc_on_an_equal_size_reference_sample():
    rng = np.random.default_rng(1)
    audited, reference = rng.normal(size=(30, 8)), rng.normal(0.3, 1, size=(200, 8))
    entry = space_entry(audited, reference, DistanceSettings(5, 30, n_resamples=50), SpaceSettings(), 0)
    # KID and its CI are distance.py's (whose bootstrap another change corrects): here only their presence
    assert entry["kid"] is not None and entry["kid_ci"][0] <= entry["kid_ci"][1] and entry["fid"] > 0
    assert entry["prdc_n_reference"] == 30 and entry["prdc_nearest_k"] == 5
    rows = np.sort(np.random.default_rng(0).choice(200, 30, replace=False))
    assert entry["recall"] == pytest.approx(prdc_numpy(reference[rows], audited, 5)["recall"])


def test_random_extractor_is_seeded():
    images = torch.rand(3, 1, 40, 40)
    first, again, other = (RandomInitExtractor("test_resnet", seed=s, input_size=32) for s in (0, 0, 1))
    assert torch.equal(first.embed(images), again.embed(images)) and first.identity == again.identity
    assert not torch.equal(first.embed(images), other.embed(images)) and first.identity != other.identity


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random weights, saved as a local weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random initialisation
            return None

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pt")
    torch.manual_seed(0)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(folder / "empty.pt"))
    torch.save(net.state_dict(), folder / "inception.pth")
    return folder / "inception.pth"


@pytest.mark.slow
def test_inception_features_are_torch_fidelitys_from_a_local_file(inception_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    images = torch.rand(2, 1, 64, 64)
    extractor = InceptionExtractor(str(inception_weights))
    reference = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_weights)
    )
    (expected,) = reference((images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1))
    assert torch.allclose(extractor.embed(images), expected, atol=1e-5) and expected.shape == (2, 2048)


def test_hugging_face_extractor_uses_the_folders_preprocessing_and_cls_embedding(tmp_path):
    from transformers import AutoImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=56,
    )
    Dinov2Model(config).save_pretrained(tmp_path)
    processor = {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 56},
        "do_center_crop": True,
        "crop_size": {"height": 56, "width": 56},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.53, 0.53, 0.53],
        "image_std": [0.26, 0.26, 0.26],
        "do_convert_rgb": True,
        "resample": 2,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    extractor = HuggingFaceExtractor(str(tmp_path))
    images = torch.rand(2, 1, 56, 56)
    inputs = AutoImageProcessor.from_pretrained(str(tmp_path)).preprocess(
        [np.repeat((img[0].numpy() * 255).astype(np.float32)[..., None], 3, -1) for img in images],
        return_tensors="pt",
        do_rescale=True,
    )
    with torch.no_grad():
        expected = Dinov2Model.from_pretrained(str(tmp_path))(**inputs).pooler_output
    assert extractor.input_size == 56
    assert torch.allclose(extractor.embed(images), expected, atol=1e-4)


def test_missing_weights_skip_a_space_with_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for make, needle in (
        (lambda: InceptionExtractor(None), "weights-inception-2015-12-05-6726825d.pth"),
        (
            lambda: InceptionExtractor(str(tmp_path / "nope.pth")),
            "set distance.spaces.inception.weights_path",
        ),
        (lambda: HuggingFaceExtractor(None), "huggingface.co/microsoft/rad-dino"),
        (lambda: HuggingFaceExtractor(str(tmp_path)), "holds no model"),
        (
            lambda: TorchXRayVisionAuditor(
                weights="densenet121-res224-all", download=False, key="distance.spaces.xrv_densenet"
            ),
            "set distance.spaces.xrv_densenet.weights_path=FILE",
        ),
    ):
        with pytest.raises(CxrsynError) as error:
            make()
        assert needle in str(error.value) and "\n" not in str(error.value)
