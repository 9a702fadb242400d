"""Grad-CAM: target layers of real timm models, exact band shares, and a planted test that the share follows
where the evidence is (tiny models trained for a few seconds on squares in the bottom or the top band)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.transforms import build_transform, source_band_weights
from cxrsyn.evaluation.gradcam import (
    CELLS,
    bottom_band_share,
    compute_cams,
    confusion_cells,
    gradcam_for_test_set,
    grid_rows,
    module_path,
    target_layer,
)
from cxrsyn.models.backbone import create_backbone
from cxrsyn.models.classifier import PneumoniaClassifier

PLANTED_SIZE = 96  # the tiny ResNet's last stage is then a 3x3 map
BAND = 0.3


# ------------------------------------------------------------------------------------------ target layer
@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ("resnet18", "layer4.1"),
        ("resnet18.a1_in1k", "layer4.1"),
        ("densenet121", "features.norm5"),
        ("efficientnet_b0", "bn2"),
        ("convnext_tiny", "stages.3"),
        ("test_resnet", "layer4.0"),
        ("test_efficientnet", "bn2"),
        ("test_convnext", "stages.3"),
    ],
)
def test_target_layer_of_each_family(backbone, expected):
    net = create_backbone(backbone, pretrained=False)
    layer = target_layer(net, backbone)
    assert layer is net.get_submodule(expected)
    assert module_path(net, layer) == expected


def test_override_is_a_module_path():
    net = create_backbone("resnet18", pretrained=False)
    assert target_layer(net, "resnet18", override="layer3.1") is net.layer3[1]


def test_unknown_family_names_the_setting_and_conv_layers():
    net = create_backbone("test_vit", pretrained=False)
    with pytest.raises(CxrsynError) as error:
        target_layer(net, "test_vit")
    message = str(error.value)
    assert message.startswith(
        "no Grad-CAM target layer known for backbone 'test_vit'; set gradcam.target_layer="
    )
    assert "patch_embed.proj" in message and "\n" not in message


def test_bad_override_lists_close_matches():
    net = create_backbone("resnet18", pretrained=False)
    with pytest.raises(CxrsynError) as error:
        target_layer(net, "resnet18", override="layr4.1")
    message = str(error.value)
    assert message.startswith("gradcam.target_layer='layr4.1' is not a module of backbone 'resnet18'")
    assert "did you mean layer4.1" in message and "\n" not in message


# ------------------------------------------------------------------------------------- shares and cells
def test_bottom_band_share_is_exact():
    height, width = 50, 20  # 30 % of 50 rows is 15 rows: no rounding
    band = np.zeros((height, width))
    band[35:] = 1.0
    uniform = np.ones((height, width))
    zero = np.zeros((height, width))
    shares = bottom_band_share(np.stack([band, uniform, zero]), BAND)
    assert shares[0] == 1.0
    assert shares[1] == 0.3
    assert np.isnan(shares[2])


def test_bottom_band_share_rejects_a_bad_fraction():
    with pytest.raises(CxrsynError, match=r"gradcam.band_fraction=1.5"):
        bottom_band_share(np.ones((1, 4, 4)), 1.5)


def test_band_share_is_measured_in_the_stored_images_rows_without_padding():
    """A wide 100 x 200 image letterboxed to 64 px fills input rows 16-47; its bottom 30% (stored rows
    70-99) lands on input rows 38-47. A map on input rows 40-47 lies wholly in that band, although half of
    those rows are above the input's own bottom 30% (rows 44-63, most of them padding)."""
    content, band = source_band_weights(100, 200, 0.0, BAND, 64, "letterbox")
    image = build_transform(64, "letterbox")(image=np.ones((100, 200), np.float32))["image"][0].numpy()
    np.testing.assert_array_equal(content > 0.5, image > 0.5)  # the same padding as the real transform
    assert np.flatnonzero(content.max(axis=1) > 0.5).tolist() == list(range(16, 48))
    band_rows = np.flatnonzero(band.max(axis=1) > 0)
    assert band_rows[0] == 38 and band_rows[-1] == 47  # 16 + 0.7 x 32 = 38.4 (row centres)
    cam = np.zeros((64, 64))
    cam[40:48] = 1.0
    assert bottom_band_share(cam[None], BAND, [(content, band)])[0] == 1.0
    assert bottom_band_share(cam[None], BAND)[0] == 0.5  # in input rows (44-63): 44-47 of 40-47
    uniform = np.ones((1, 64, 64))
    assert bottom_band_share(uniform, BAND, [(content, band)])[0] == pytest.approx(10 / 32)
    padding_only = np.zeros((1, 64, 64))
    padding_only[0, 50:] = 1.0
    assert np.isnan(bottom_band_share(padding_only, BAND, [(content, band)])[0])


@pytest.mark.parametrize(("height", "width"), [(200, 100), (1024, 717), (717, 1024)])
def test_under_stretch_the_band_is_the_same_share_of_rows_for_any_shape(height, width):
    content, band = source_band_weights(height, width, 0.0, BAND, 96, "stretch")
    np.testing.assert_allclose(content, 1.0, atol=1e-6)  # no padding
    share = bottom_band_share(np.ones((1, 96, 96)), BAND, [(content, band)])[0]
    assert share == pytest.approx(BAND, abs=1 / 96)


def test_a_cropped_stored_image_has_no_bottom_band_left_in_view():
    # a test image cropped by 0.3 shows stored rows 0-69 of 100: the band (rows 70-99) is not in the input
    content, band = source_band_weights(100, 100, 0.3, BAND, 32, "stretch")
    assert band.sum() == 0 and content.sum() == 32 * 32


def test_grid_rows_fall_back_to_ranks_when_the_threshold_predicts_one_class():
    labels = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([0.3, 0.1, 0.2, 0.05, 0.25, 0.15])
    rows, ranked = grid_rows(confusion_cells(labels, probs, 0.9), labels, probs, 2)
    assert ranked
    assert [label.replace("\n", " ") for label, _ in rows] == [
        "pneumonia highest p",
        "pneumonia lowest p",
        "normal highest p",
        "normal lowest p",
    ]
    assert [list(indices) for _, indices in rows] == [[0, 2], [1, 2], [4, 5], [3, 5]]
    rows, ranked = grid_rows(confusion_cells(labels, probs, 0.2), labels, probs, 2)
    assert not ranked and [label for label, _ in rows] == list(CELLS)


def test_confusion_cells_put_confident_errors_first():
    labels = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    probs = np.array([0.9, 0.6, 0.8, 0.2, 0.1, 0.55, 0.4, 0.5])
    cells = confusion_cells(labels, probs, threshold=0.5)
    assert list(cells) == list(CELLS)
    assert cells["TP"].tolist() == [0, 1]
    assert cells["FP"].tolist() == [2, 5, 7]  # 0.5 is predicted positive (>= threshold)
    assert cells["FN"].tolist() == [4, 6]
    assert cells["TN"].tolist() == [3]


# ---------------------------------------------------------------------------------------------- maps
def test_cams_have_the_input_shape_and_leave_the_model_as_it_was():
    torch.manual_seed(0)
    model = PneumoniaClassifier(backbone="test_resnet", pretrained=False)
    model.train()
    model.net.fc.weight.grad = torch.ones_like(model.net.fc.weight)
    model.net.conv1[0].weight.requires_grad_(False)
    with torch.no_grad():  # callers may hold gradients off
        cams = compute_cams(model, torch.rand(3, 1, 48, 40), target_layer(model.net, "test_resnet"))
    assert cams.shape == (3, 48, 40) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert all(module.training for module in model.modules())
    assert torch.equal(model.net.fc.weight.grad, torch.ones_like(model.net.fc.weight))
    assert not model.net.conv1[0].weight.requires_grad and model.net.fc.weight.requires_grad
    assert model.net.layer1[0].conv1.weight.grad is None


def test_unknown_target_is_an_error():
    model = PneumoniaClassifier(backbone="test_resnet", pretrained=False)
    with pytest.raises(CxrsynError, match="gradcam.target='abnormal'"):
        compute_cams(model, torch.rand(1, 1, 32, 32), model.net.layer4, target="abnormal")


def _square_images(n: int, band: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dim noise; odd items ("pneumonia") carry a bright square somewhere inside the top or bottom band."""
    size, side = PLANTED_SIZE, PLANTED_SIZE // 6
    band_rows = round(size * BAND)
    images = 0.2 + 0.05 * torch.rand(n, 1, size, size, generator=generator)
    labels = torch.arange(n) % 2
    for i in np.flatnonzero(labels.numpy()):
        low, high = (size - band_rows, size - side) if band == "bottom" else (0, band_rows - side)
        row = int(torch.randint(low, high + 1, (1,), generator=generator))
        column = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        images[i, 0, row : row + side, column : column + side] = 1.0
    return images, labels.float()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: faster than several for models this small, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted_models() -> dict[str, PneumoniaClassifier]:
    """A tiny classifier per band, 25 AdamW steps each (about 1 s each).

    BatchNorm stays in eval mode during training, so the few-step model predicts the same at test time.
    """
    models = {}
    for band in ("bottom", "top"):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = PneumoniaClassifier(backbone="test_resnet", pretrained=False).eval()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(25):
            images, labels = _square_images(16, band, generator)
            loss = F.binary_cross_entropy_with_logits(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        models[band] = model
    return models


@pytest.mark.parametrize("band", ["bottom", "top"])
def test_band_share_follows_the_planted_evidence(planted_models, band):
    model = planted_models[band]
    images, labels = _square_images(24, band, torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = (model(images) > 0).float()
    assert torch.equal(predicted, labels)  # the model has learnt the square
    positives = images[labels == 1]
    cams = compute_cams(model, positives, target_layer(model.net, "test_resnet"))
    shares = bottom_band_share(cams, BAND)
    if band == "bottom":
        assert np.mean(shares) > 0.5
    else:
        assert np.mean(shares) < 0.2


def test_predicted_target_is_the_logit_or_its_negation(planted_models):
    model = planted_models["bottom"]
    images, _ = _square_images(6, "bottom", torch.Generator().manual_seed(2))
    with torch.no_grad():
        positive = (model(images) > 0).numpy()
    assert positive.any() and not positive.all()
    layer = target_layer(model.net, "test_resnet")
    predicted = compute_cams(model, images, layer, target="predicted")
    pneumonia = compute_cams(model, images, layer, target="pneumonia")
    normal = compute_cams(model, images, layer, target="normal")
    np.testing.assert_array_equal(predicted[positive], pneumonia[positive])
    np.testing.assert_array_equal(predicted[~positive], normal[~positive])


# ------------------------------------------------------------------------------------------- test set
class _TestSet(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index], "index": index}


def test_gradcam_for_test_set_writes_grid_and_maps(planted_models, tmp_path):
    model = planted_models["bottom"]
    images, labels = _square_images(20, "bottom", torch.Generator().manual_seed(3))
    with torch.no_grad():
        probs = torch.sigmoid(model(images)).double().numpy()
    table = pd.DataFrame(
        {"path": [f"{i}.png" for i in range(20)], "label": labels.int().numpy(), "prob": probs}
    )
    result = gradcam_for_test_set(
        model,
        _TestSet(images, labels),
        table,
        0.5,
        tmp_path,
        "planted",
        n_per_cell=3,
        n_share=12,
        batch_size=8,
    )

    json.dumps(result, allow_nan=False)
    assert (
        result["target_layer"] == "layer4.0" and result["band_fraction"] == 0.3 and result["threshold"] == 0.5
    )
    assert set(result["bottom_band_share"]) == {"mean", "median", "n", "n_zero_cam"}
    assert result["bottom_band_share"]["n"] == 12
    assert set(result["by_cell"]) == set(CELLS)
    assert sum(cell["n"] for cell in result["by_cell"].values()) == 12
    assert result["by_cell"]["TP"]["mean_share"] > 0.5
    assert result["by_cell"]["FP"] == {"n": 0, "mean_share": None}  # the empty row reads "none"
    with Image.open(tmp_path / result["grid"]) as grid:
        assert grid.format == "PNG" and grid.width > 100
    saved = np.load(tmp_path / result["cams"])
    assert saved["cams"].shape == (len(saved["indices"]), 64, 64) and saved["cams"].dtype == np.float16
    assert saved["cells"].tolist() == ["TP"] * 3 + ["TN"] * 3
    np.testing.assert_array_equal(saved["probs"], probs[saved["indices"]])
    assert saved["share_indices"].shape == saved["shares"].shape == (12,)


def test_gradcam_for_test_set_needs_one_row_per_item(planted_models, tmp_path):
    images, labels = _square_images(4, "bottom", torch.Generator().manual_seed(4))
    table = pd.DataFrame({"path": ["a", "b"], "label": [0, 1], "prob": [0.1, 0.9]})
    with pytest.raises(CxrsynError, match="has 2 rows but the test set 4 items"):
        gradcam_for_test_set(planted_models["bottom"], _TestSet(images, labels), table, 0.5, tmp_path, "x")
