import numpy as np
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.transforms import Augmentation, CropBottom, build_transform, crop_bottom


def gradient(height: int, width: int) -> np.ndarray:
    return np.tile(np.linspace(0, 1, height, dtype=np.float32)[:, None], (1, width))


def test_crop_bottom_keeps_the_top_rows():
    image = gradient(100, 40)
    cropped = crop_bottom(image, 0.3)
    assert cropped.shape == (70, 40)
    np.testing.assert_array_equal(cropped, image[:70])
    assert crop_bottom(image, 0.0).shape == (100, 40)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_crop_fraction_out_of_range_is_rejected(fraction):
    with pytest.raises(CxrsynError, match="crop_bottom_fraction"):
        crop_bottom(gradient(10, 10), fraction)


def test_crop_transform_in_a_pipeline_equals_cropping_first():
    image = gradient(120, 90)
    with_crop = build_transform(32, "stretch", crop_bottom_fraction=0.3)(image=image)["image"]
    precropped = build_transform(32, "stretch")(image=crop_bottom(image, 0.3))["image"]
    assert with_crop.shape == (1, 32, 32)
    np.testing.assert_allclose(with_crop.numpy(), precropped.numpy(), atol=1e-6)
    assert CropBottom(0.3).get_transform_init_args() == {"fraction": 0.3}


@pytest.mark.parametrize("policy", ["letterbox", "stretch", "center_crop"])
def test_every_resize_policy_gives_a_square_unit_range_tensor(policy):
    tensor = build_transform(40, policy)(image=gradient(100, 60))["image"]
    assert tuple(tensor.shape) == (1, 40, 40)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def test_letterbox_pads_and_keeps_the_aspect_ratio():
    tensor = build_transform(40, "letterbox")(image=np.ones((100, 50), np.float32))["image"][0]
    filled_columns = np.flatnonzero(tensor.numpy().max(axis=0) > 0.5)
    assert 18 <= filled_columns.size <= 22  # 50/100 of the width, centred
    assert tensor[:, 0].max() == 0 and tensor[:, -1].max() == 0


def test_unknown_resize_policy_is_named():
    with pytest.raises(
        CxrsynError, match=r"datamodule.resize='squash' is unknown; use one of stretch, letterbox"
    ):
        build_transform(32, "squash")


def test_augmentation_is_reproducible_for_a_seed_and_varies_across_seeds():
    transform = build_transform(32, "stretch", augmentation=Augmentation(affine_p=1.0))
    image = np.random.default_rng(0).random((64, 64), dtype=np.float32)

    def draw(seed: int) -> np.ndarray:
        transform.set_random_seed(seed)
        return transform(image=image)["image"].numpy()

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


def test_unknown_augmentation_key_is_named():
    with pytest.raises(CxrsynError, match=r"datamodule.augmentation has unknown key\(s\) \['rotate'\]"):
        Augmentation.from_config({"rotate": 5})
