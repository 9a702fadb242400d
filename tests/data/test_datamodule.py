import numpy as np
import pytest

from cxrsyn.data.datamodule import CXRDataModule, stratified_split
from cxrsyn.data.manifest import write_manifest
from cxrsyn.data.sources import DatasetFolder, PhantomFolder
from cxrsyn.errors import CxrsynError


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    train = PhantomFolder(root=str(root / "gen"), n_per_class=10, image_size=48)
    test = PhantomFolder(root=str(root / "real"), domain="real_like", n_per_class=7, seed=1, image_size=48)
    return train, test


def make(train, test, **kwargs) -> CXRDataModule:
    settings = {"image_size": 32, "batch_size": 4, "num_workers": 0, "val_fraction": 0.25, "seed": 0}
    settings.update(kwargs)
    datamodule = CXRDataModule(train=train, test_sets={"real": test}, **settings)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_stratified_split_is_seeded_and_keeps_both_classes():
    labels = np.array([1] * 9 + [0] * 21)
    train, val = stratified_split(labels, 0.2, seed=1)
    assert sorted(np.r_[train, val]) == list(range(30))
    assert labels[val].sum() == 2 and (labels[val] == 0).sum() == 4
    assert np.array_equal(stratified_split(labels, 0.2, seed=1)[1], val)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=2)[1], val)


def test_counts_are_summarised(sources):
    datamodule = make(*sources)
    summary = datamodule.summary
    # round(0.25 * 10) = 2 validation images per class
    assert summary["train"] == {"n": 16, "n_pos": 8, "n_neg": 8}
    assert summary["val"] == {"n": 4, "n_pos": 2, "n_neg": 2}
    assert summary["test_sets"]["real"]["n"] == 14 and summary["test_sets"]["real"]["n_pos"] == 7


def test_loaders_yield_unit_range_single_channel_batches(sources):
    datamodule = make(*sources)
    batch = next(iter(datamodule.train_dataloader()))
    assert tuple(batch["image"].shape) == (4, 1, 32, 32)
    assert batch["label"].dtype.is_floating_point
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
    (test_loader,) = datamodule.test_dataloader()
    indices = [int(i) for batch in test_loader for i in batch["index"]]
    assert indices == list(range(14))


def test_sources_may_crop_differently(sources, tmp_path):
    train, test = sources
    cropped = PhantomFolder(**{**train.__dict__, "crop_bottom_fraction": 0.3})
    datamodule = make([train, cropped], test, augment=False)
    dataset = datamodule._datasets["train"]
    assert {t.transforms[0].__class__.__name__ for t in dataset.transforms} == {
        "CropBottom",
        "LongestMaxSize",
    }
    assert datamodule.summary["train"]["n"] + datamodule.summary["val"]["n"] == 40


def test_a_class_with_fewer_than_two_images_is_an_error(tmp_path, sources):
    (tmp_path / "images").mkdir()
    rows = [{"path": f"images/{i}.png", "label": int(i == 0)} for i in range(5)]
    for row in rows:
        from PIL import Image

        Image.new("L", (8, 8)).save(tmp_path / row["path"])
    write_manifest(tmp_path, rows)
    with pytest.raises(CxrsynError, match=r"has 1 pneumonia image\(s\); a train/val split needs at least 2"):
        make(DatasetFolder(root=str(tmp_path)), sources[1])


def test_missing_test_folder_is_an_error(sources, tmp_path):
    with pytest.raises(CxrsynError, match=r"dataset folder .*absent does not exist"):
        make(sources[0], DatasetFolder(root=str(tmp_path / "absent")))
