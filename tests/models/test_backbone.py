import pytest
import timm
import torch

from cxrsyn.core.errors import CxrsynError
from cxrsyn.models.backbone import create_backbone, input_normalisation


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(
        CxrsynError, match=r"model.backbone='resnet5' is not a timm model; did you mean resnet50"
    ):
        create_backbone("resnet5", pretrained=False)


def test_pretrained_without_a_hub_fails_with_the_fixes():
    # conftest sets HF_HUB_OFFLINE=1: the hub is unreachable here, as on an air-gapped cluster
    with pytest.raises(CxrsynError) as error:
        create_backbone("resnet18", pretrained=True)
    message = str(error.value)
    assert "could not fetch pretrained weights for backbone 'resnet18'" in message
    assert "model.weights_path=FILE" in message and "model.pretrained=false" in message
    assert "\n" not in message


def test_local_weights_load_and_the_stem_sums_rgb_filters(tmp_path):
    source = timm.create_model("test_resnet", num_classes=1000, in_chans=3)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = create_backbone(
        "test_resnet", pretrained=False, weights_path=tmp_path / "weights.pth", in_chans=1
    )
    loaded, original = model.state_dict(), source.state_dict()
    stem = next(name for name, value in original.items() if value.ndim == 4)
    torch.testing.assert_close(loaded[stem], original[stem].sum(dim=1, keepdim=True))
    shared = [
        name
        for name in original
        if name != stem and loaded.get(name, torch.empty(0)).shape == original[name].shape
    ]
    assert len(shared) > 10
    for name in shared:
        torch.testing.assert_close(loaded[name], original[name])
    classifier = model.get_classifier()
    assert classifier.out_features == 1  # the 1000-class head was not loaded into the 1-logit head


def test_weights_of_another_architecture_are_rejected(tmp_path):
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "other.pth")
    with pytest.raises(CxrsynError, match=r"does not fit backbone 'test_resnet'"):
        create_backbone("test_resnet", pretrained=False, weights_path=tmp_path / "other.pth")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(CxrsynError, match=r"model.weights_path=.*nope.pth does not exist"):
        create_backbone("test_resnet", pretrained=False, weights_path=tmp_path / "nope.pth")


def test_grayscale_normalisation_is_the_channel_average():
    mean, std = input_normalisation(create_backbone("resnet18", pretrained=False))
    assert mean == pytest.approx((0.485 + 0.456 + 0.406) / 3)
    assert std == pytest.approx((0.229 + 0.224 + 0.225) / 3)
