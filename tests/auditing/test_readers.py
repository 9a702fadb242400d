"""Attribute readers: torchxrayvision's published models from local files (the same outputs as
torchxrayvision's own classes), the one-line message when a file is missing, a user's timm or cxrsyn.train
classifier loaded weights-only, and the pixel stand-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from cxrsyn.auditing.readers import (
    XRV_FILES,
    PixelAttributeReader,
    TimmAttributeReader,
    TorchXRayVisionAgeReader,
    TorchXRayVisionSexReader,
    TorchXRayVisionViewReader,
    years_to_band,
)
from cxrsyn.core.errors import CxrsynError


@pytest.fixture
def xrv_home(tmp_path, monkeypatch):
    """A home folder whose ~/.torchxrayvision/models_data holds random weights in each published format, so
    torchxrayvision's own classes load them without a download."""
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".torchxrayvision" / "models_data"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    sex = torchvision.models.resnet34(weights=None)
    sex.fc = torch.nn.Linear(512, 2)
    # MIRA's file is a Lightning checkpoint whose keys carry the module's "model." prefix
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in sex.state_dict().items()}}, folder / XRV_FILES["sex"]
    )
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), folder / XRV_FILES["view"])

    class TinyAge(
        torch.nn.Module
    ):  # the real file is a TorchScript SE-ResNeXt; any scripted regressor will do
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 40.0 + 30.0 * self.linear(x.mean(dim=(2, 3)))

    torch.jit.save(torch.jit.script(TinyAge()), str(folder / XRV_FILES["age"]))
    return folder


def _xrv_inputs(images: torch.Tensor, size: int) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return resized * 2048 - 1024


def test_torchxrayvision_readers_agree_with_torchxrayvision_itself(xrv_home):
    import torchxrayvision as xrv

    images = torch.rand(4, 1, 96, 96)
    with torch.no_grad():
        sex = xrv.baseline_models.mira.SexModel()(_xrv_inputs(images, 224))
        view = xrv.baseline_models.xinario.ViewModel()(_xrv_inputs(images, 224))
        age = xrv.baseline_models.riken.AgeModel()(_xrv_inputs(images, 320))
    assert TorchXRayVisionSexReader().read(images) == [["male", "female"][i] for i in sex.argmax(1)]
    assert TorchXRayVisionViewReader().read(images) == [["Frontal", "Lateral"][i] for i in view.argmax(1)]
    assert TorchXRayVisionAgeReader().read(images) == pytest.approx(age.reshape(-1).tolist(), abs=1e-4)
    reader = TorchXRayVisionViewReader()
    assert {reader.class_of(p) for p in ("PA erect", "AP supine", "AP erect")} == {"Frontal"}


@pytest.mark.parametrize(
    "reader, name",
    [
        (TorchXRayVisionSexReader, "sex"),
        (TorchXRayVisionAgeReader, "age"),
        (TorchXRayVisionViewReader, "view"),
    ],
)
def test_missing_torchxrayvision_weights_are_one_line_naming_the_file_and_url(
    reader, name, tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(CxrsynError) as error:
        reader()
    line = str(error.value)
    assert "\n" not in line
    assert f"https://github.com/mlmed/torchxrayvision/releases/download/v1/{XRV_FILES[name]}" in line
    assert str(tmp_path / ".torchxrayvision" / "models_data" / XRV_FILES[name]) in line
    assert ".weights_path=FILE" in line


def test_timm_reader_reads_a_state_dict_and_a_cxrsyn_checkpoint(tmp_path):
    import timm

    torch.manual_seed(0)
    images = torch.rand(5, 1, 40, 40)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=3, in_chans=1).eval()
    torch.save(net.state_dict(), tmp_path / "age.pt")
    reader = TimmAttributeReader(
        str(tmp_path / "age.pt"), "age_band", ["1-5", "18-39", "65-90"], "test_resnet", input_size=32
    )
    from cxrsyn.models.backbone import input_normalisation

    mean, std = input_normalisation(net)
    x = (torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True) - mean) / std
    with torch.no_grad():
        expected = net(x).argmax(1)
    assert reader.read(images) == [["1-5", "18-39", "65-90"][i] for i in expected]

    from cxrsyn.models.classifier import PneumoniaClassifier

    model = PneumoniaClassifier(backbone="test_resnet", pretrained=False).eval()
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {"backbone": "test_resnet"}},
        tmp_path / "last.ckpt",
    )
    binary = TimmAttributeReader(
        str(tmp_path / "last.ckpt"), "projection", ["PA erect", "AP supine"], input_size=32
    )
    with torch.no_grad():
        logits = model(
            torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
        )
    assert binary.read(images) == [["PA erect", "AP supine"][int(v > 0)] for v in logits]
    with pytest.raises(CxrsynError, match="give two classes"):
        TimmAttributeReader(str(tmp_path / "last.ckpt"), "age_band", ["a", "b", "c"])


def test_timm_reader_never_unpickles_code(tmp_path):
    torch.save(
        {"state_dict": {"x": torch.zeros(1)}, "extra": np.random.default_rng(0)}, tmp_path / "bad.ckpt"
    )
    with pytest.raises(CxrsynError, match="it was not unpickled"):
        TimmAttributeReader(str(tmp_path / "bad.ckpt"), "sex", ["female", "male"], "test_resnet")


def test_pixel_reader_fits_maps_values_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((30, 1, 32, 32)).astype(np.float32))
    values = ["PA erect", "AP supine", "AP erect"] * 10
    ap = torch.tensor([v.startswith("AP") for v in values])
    images[ap, :, 4:12, :] += 0.6
    reader = PixelAttributeReader(
        "projection", value_map={"PA erect": "PA", "AP supine": "AP", "AP erect": "AP"}, grid=16
    )
    reader.fit(images, values)
    assert reader.classes == ["AP", "PA"]
    assert reader.read(images) == [reader.class_of(v) for v in values]
    reader.save(tmp_path / "reader.pt")
    loaded = PixelAttributeReader("projection", weights_path=str(tmp_path / "reader.pt"))
    assert loaded.read(images) == reader.read(images) and loaded.grid == 16


def test_years_become_the_prompted_band_that_holds_them():
    bands = ["18-39", "40-64", "65-90"]
    assert [years_to_band(y, bands) for y in (18.0, 39.9, 40.2, 90.0, 3.0, 97.0)] == [
        "18-39", "18-39", "40-64", "65-90", "18-39", "65-90",
    ]  # fmt: skip
    assert years_to_band(70, ["18-39", "40-64", "65+"]) == "65+"
