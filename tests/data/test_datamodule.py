import numpy as np
import pandas as pd
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import write_manifest
from cxrsyn.data.datamodule import CXRDataModule, stratified_split
from cxrsyn.data.sources import DatasetFolder, PhantomFolder


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
    assert {t.transforms[0].__class__.__name__ for t in dataset.transforms} == {"CropBottom", "Resize"}
    assert datamodule.summary["train"]["n"] + datamodule.summary["val"]["n"] == 40
    # one image read through two sources is one patient: both rows fall on the same side of the split
    sides = pd.concat(
        [datamodule.tables["train"].assign(side="train"), datamodule.tables["val"].assign(side="val")]
    )
    assert (sides.groupby("path")["side"].nunique() == 1).all()


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


def folder_with(root, rows, pixels=None):
    """A dataset folder: ``rows`` of {"path", "label", ...}; each image a distinct 8x8 PNG (or ``pixels``)."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    for number, row in enumerate(rows):
        value = number if pixels is None else pixels[number]
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(root / row["path"])
    write_manifest(root, rows)
    return DatasetFolder(root=str(root))


def test_generated_images_of_one_prompt_stay_on_one_side_of_the_split(tmp_path, sources):
    rows = [
        {"path": f"images/{i}.png", "label": i % 2, "prompt": f"prompt {i // 6}"}  # 6 images per prompt
        for i in range(60)
    ]
    datamodule = make(folder_with(tmp_path / "gen", rows), sources[1])
    sides = pd.concat(
        [datamodule.tables["train"].assign(side="train"), datamodule.tables["val"].assign(side="val")]
    )
    assert (sides.groupby("prompt")["side"].nunique() == 1).all()
    assert datamodule.summary["split"]["by"] == "prompt" and datamodule.summary["split"]["groups"] == 10
    assert set(datamodule.tables["val"]["label"]) == {0, 1}


def test_real_images_of_one_patient_stay_on_one_side_of_the_split():
    labels = np.array([1] * 30 + [0] * 30)
    patients = np.repeat(np.arange(20), 3)  # three images per patient, one class each
    train, val = stratified_split(labels, 0.2, seed=3, groups=patients)
    assert not set(patients[train]) & set(patients[val])
    assert (labels[val] == 1).sum() == 6 and (labels[val] == 0).sum() == 6  # round(0.2 x 30), whole patients


def test_a_test_image_that_is_also_a_training_image_stops_the_run(tmp_path):
    rows = [{"path": f"images/{i}.png", "label": i % 2} for i in range(8)]
    train = folder_with(tmp_path / "train", rows)
    with pytest.raises(CxrsynError) as error:
        make(train, DatasetFolder(root=str(tmp_path / "train")))  # data=X with test_sets=[X]
    message = str(error.value)
    assert message.startswith("8 image(s) of test set real are also training/validation images")
    assert "same file" in message and "evaluation.allow_overlap=true" in message and "\n" not in message
    # a copy elsewhere with the same bytes is the same image; different images are not
    copies = folder_with(
        tmp_path / "copies", rows[:3] + [{"path": "images/new.png", "label": 0}], [0, 1, 2, 250]
    )
    with pytest.raises(CxrsynError, match=r"^3 image\(s\) of test set real .* same bytes"):
        make(train, copies)
    allowed = make(train, copies, allow_overlap=True)
    assert allowed.summary["overlap"]["allowed"] is True
    assert allowed.summary["overlap"]["found"][0]["n"] == 3


def test_disjoint_sets_pass_the_overlap_guard(sources):
    datamodule = make(*sources)
    assert datamodule.summary["overlap"] == {"allowed": False, "found": []}
