"""Training-data selection: seeded stratified subsamples, repetition, mixes counted per source, and the
patient-disjoint RSNA split with its guard."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.data.rsna import RSNA
from cxrsyn.data.selection import class_quotas, patient_split, repeat_rows, selection_order, subsample
from cxrsyn.data.sources import PhantomFolder
from cxrsyn.testing.datasets.rsna import rsna_patients, write_rsna_root


def grid_table(seed: int = 0) -> pd.DataFrame:
    """A prompt grid with unequal strata: 2 labels x 2 sexes x 3 age bands, 7 to 40 images per cell."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, sex, age in itertools.product([0, 1], ["female", "male"], ["18-39", "40-64", "65-90"]):
        for i in range(int(rng.integers(7, 41))):
            rows.append({"path": f"{label}/{sex}/{age}/{i}.png", "label": label, "sex": sex, "age_band": age})
    return pd.DataFrame(rows)


def test_subsample_is_exact_seeded_nested_and_proportional_in_every_stratum():
    table = grid_table()
    chosen, record = subsample(table, 25, None, seed=3, stratify_by=None, source="grid")
    assert (chosen["label"] == 1).sum() == 25 and (chosen["label"] == 0).sum() == 25
    assert record["stratify_by"] == ["sex", "age_band"] and record["selected"] == 50
    # each stratum gives the floor or the ceiling of its proportional share (counted by hand from the table)
    for label in (0, 1):
        cells = table[table["label"] == label].groupby(["sex", "age_band"]).size()
        taken = chosen[chosen["label"] == label].groupby(["sex", "age_band"]).size()
        for cell, size in cells.items():
            share = 25 * size / cells.sum()
            assert math.floor(share) <= taken.get(cell, 0) <= math.ceil(share), (label, cell)
    again, _ = subsample(table, 25, None, seed=3, stratify_by=None, source="grid")
    assert again["path"].tolist() == chosen["path"].tolist()
    other, _ = subsample(table, 25, None, seed=4, stratify_by=None, source="grid")
    assert set(other["path"]) != set(chosen["path"])
    larger, _ = subsample(table, 40, None, seed=3, stratify_by=None, source="grid")
    assert set(chosen["path"]) < set(larger["path"])  # a scaling curve's arms are nested
    assert chosen["path"].isin(table["path"]).all() and chosen["path"].is_unique


def random_table(rng: np.random.Generator) -> pd.DataFrame:
    """Two classes, each over 1 to 24 strata (sex x age band x view) of 1 to 40 images, sizes drawn at random."""
    rows = []
    for label in (0, 1):
        cells = list(itertools.product(["F", "M"], ["a", "b", "c", "d"], ["PA", "AP", "LL"]))
        for sex, age, view in [cells[i] for i in rng.choice(24, int(rng.integers(1, 25)), replace=False)]:
            for i in range(int(rng.integers(1, 41))):
                rows.append(
                    {
                        "path": f"{label}{sex}{age}{view}{i}",
                        "label": label,
                        "sex": sex,
                        "age_band": age,
                        "view": view,
                    }
                )
    return pd.DataFrame(rows)


def test_every_stratum_gets_the_floor_or_ceiling_of_its_share_over_many_random_tables():
    """The documented claim, on 100 random tables x 6 sizes each: within each class every stratum gives
    floor or ceil of n N_h / N (N_h its images, N the class's), and the smaller subsample is inside the
    larger. (The sorted-keys allocation this replaced missed the floor or ceiling in 145 of 64,880 strata.)"""
    rng = np.random.default_rng(2024)
    checked, missed = 0, []
    for table_number in range(100):
        table = random_table(rng)
        cell = table["label"].astype(str) + table["sex"] + table["age_band"] + table["view"]
        sizes = cell.value_counts()
        class_size = table.groupby("label").size()
        previous: set[str] = set()
        for n in np.unique(rng.integers(0, int(class_size.min()) + 1, 6)):
            chosen, _ = subsample(table, int(n), None, seed=table_number, stratify_by=None, source="random")
            taken = cell[table["path"].isin(chosen["path"])].value_counts().reindex(sizes.index, fill_value=0)
            share = n * sizes / class_size[sizes.index.str[0].astype(int)].to_numpy()
            outside = (taken < np.floor(share + 1e-9)) | (taken > np.ceil(share - 1e-9))
            missed += [(table_number, int(n), name) for name in sizes.index[outside]]
            checked += len(sizes)
            assert previous <= set(chosen["path"])  # nested in n
            previous = set(chosen["path"])
    assert checked > 10000 and not missed, f"{len(missed)} of {checked} strata, e.g. {missed[:3]}"


def test_the_quota_order_meets_quota_at_every_size():
    """Every prefix of the selection order, at every size n from 1 to N, on 200 random strata layouts."""
    rng = np.random.default_rng(7)
    for layout in range(200):
        sizes = rng.integers(1, 30, int(rng.integers(1, 20)))
        table = pd.DataFrame({"stratum": np.repeat(np.arange(sizes.size), sizes)})
        order = selection_order(table, ["stratum"], seed=layout, count=len(table))
        assert sorted(order) == list(range(len(table)))
        counts = np.cumsum(np.eye(sizes.size, dtype=int)[table["stratum"].to_numpy()[order]], axis=0)
        shares = np.arange(1, len(table) + 1)[:, None] * sizes[None, :] / sizes.sum()
        assert (counts >= np.floor(shares + 1e-9)).all() and (counts <= np.ceil(shares - 1e-9)).all(), layout


def test_max_total_keeps_the_class_ratio_and_is_exact():
    table = grid_table(1)
    share = 33 * (table["label"] == 1).mean()
    for stratify_by in (["sex"], None):  # None: every attribute, strata of a few images each
        chosen, record = subsample(table, None, 33, seed=0, stratify_by=stratify_by, source="grid")
        assert len(chosen) == 33
        assert math.floor(share) <= (chosen["label"] == 1).sum() <= math.ceil(share)
    assert record["stratify_by"] == ["sex", "age_band"]
    smaller, _ = subsample(table, None, 20, seed=0, stratify_by=None, source="grid")
    assert set(smaller["path"]) < set(chosen["path"])


def test_class_quotas_by_hand():
    labels = np.array([0] * 7 + [1] * 3)
    assert class_quotas(labels, 5) == {0: 4, 1: 1}  # 3.5 / 1.5: the tied remainder goes to the lower label
    assert class_quotas(labels, 10) == {0: 7, 1: 3}
    assert class_quotas(labels, 4) == {0: 3, 1: 1}  # 2.8 / 1.2
    assert [class_quotas(labels, n)[1] for n in range(11)] == [0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3]  # never falls


def test_asking_for_more_than_a_class_holds_is_one_line():
    table = grid_table()
    n_pos = int((table["label"] == 1).sum())
    with pytest.raises(
        CxrsynError, match=rf"^max_per_class=1000 for grid, which holds {n_pos} pneumonia image\(s\)"
    ):
        subsample(table, 1000, None, 0, None, "grid")
    with pytest.raises(CxrsynError, match=r"^max_total=-3 for grid must be a whole number of images"):
        subsample(table, None, -3, 0, None, "grid")
    with pytest.raises(CxrsynError, match=r"^stratify_by=\['habitus'\] for grid: column\(s\) \['habitus'\]"):
        subsample(table, 5, None, 0, ["habitus"], "grid")


def test_repeat_and_repeat_to():
    table = pd.DataFrame({"path": list("abc"), "label": [0, 1, 0]})
    assert repeat_rows(table, 2, None, "x")["path"].tolist() == list("abcabc")
    assert repeat_rows(table, None, 7, "x")["path"].tolist() == list("abcabca")
    assert repeat_rows(table, None, None, "x") is table
    with pytest.raises(CxrsynError, match="^repeat_to=2 for x, which has 3 image"):
        repeat_rows(table, None, 2, "x")


def test_patient_split_is_disjoint_stable_and_near_its_fraction():
    patients = pd.Series([f"patient-{i}" for i in range(4000)])
    train = patient_split(patients, "train", 0.2, 0, "x")
    test = patient_split(patients, "test", 0.2, 0, "x")
    assert not (train & test).any() and (train | test).all()
    assert abs(train.mean() - 0.2) < 0.02  # binomial sd 0.0063
    subset = patients.iloc[::7].reset_index(drop=True)  # another selection: each patient keeps its side
    np.testing.assert_array_equal(patient_split(subset, "train", 0.2, 0, "x"), train[::7])
    assert not np.array_equal(patient_split(patients, "train", 0.2, 1, "x"), train)


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    synthetic = PhantomFolder(root=str(root / "gen"), n_per_class=12, image_size=48)
    real = PhantomFolder(root=str(root / "real"), domain="real_like", n_per_class=10, seed=1, image_size=48)
    test = PhantomFolder(root=str(root / "test"), domain="real_like", n_per_class=6, seed=2, image_size=48)
    return synthetic, real, test


def make(train, test, **kwargs) -> CXRDataModule:
    datamodule = CXRDataModule(
        train=train,
        test_sets={"real": test},
        image_size=32,
        batch_size=4,
        num_workers=0,
        val_fraction=0.25,
        **kwargs,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_a_mix_is_counted_per_source_and_listed(two_folders, tmp_path):
    synthetic, real, test = two_folders
    synthetic = PhantomFolder(**{**synthetic.__dict__, "part": "synthetic"})
    real = PhantomFolder(**{**real.__dict__, "part": "real", "max_total": 6, "repeat_to": 15})
    datamodule = make([synthetic, real], test)
    mix = datamodule.summary["mix"]
    assert mix["synthetic"]["n"] == 24 and mix["real"]["n"] == 15
    assert mix["real"]["n_pos"] + mix["real"]["n_neg"] == 15
    assert mix["synthetic"]["share"] == pytest.approx(24 / 39)
    selection = datamodule.summary["train_sources"]["real"]["selection"]
    assert selection["available"] == 20 and selection["selected"] == 6 and selection["repeat_to"] == 15
    written = datamodule.save_lists(tmp_path)
    listed = pd.read_csv(tmp_path / written["train_files"])
    assert len(listed) == 39 and listed["source"].value_counts().to_dict() == {"synthetic": 24, "real": 15}
    assert listed.loc[listed["source"] == "real", "path"].nunique() == 6
    # copies of one image never straddle the train/validation split (paths are relative to their part's root)
    assert listed.groupby(["source", "path"])["split"].nunique().max() == 1
    assert set(listed["split"]) == {"train", "val"}


def mixing_arm_lists(arm: str, data_dir, out_dir, k: int = 25, seed: int = 1) -> pd.DataFrame:
    """``train_files.csv`` of one job of the mixing study (phantom, small images), written without training."""
    from cxrsyn.core.compose import build_datamodule
    from tests.conftest import compose_config

    overrides = [
        "+experiment=mixing",
        "source=phantom",
        f"data={arm}",
        f"mixing.k={k}",
        f"seed={seed}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={data_dir}/cache",
        "datamodule.image_size=32",
        "datamodule.cache_workers=1",
        "data.parts.real.phantom.n_per_class=30",
        "data.parts.real.phantom.image_size=32",
    ]
    if arm == "mix_synthetic_real":
        overrides += [
            "data.parts.synthetic.phantom.n_per_class=20",
            "data.parts.synthetic.phantom.image_size=32",
        ]
    datamodule = build_datamodule(compose_config("train", overrides), test_sets={})
    datamodule.prepare_data()
    datamodule.setup("fit")
    written = datamodule.save_lists(out_dir / arm)
    return pd.read_csv(out_dir / arm / written["train_files"])


def test_the_mixing_arms_train_on_the_same_real_images(tmp_path):
    """The train/validation split is drawn per part with the run's seed, before repetition: at the same k and
    seed, synthetic + real, real alone and the duplicate control train (and validate) on the same real
    images, so their comparisons isolate what the synthetic images or the copies add."""
    sides = {}
    for arm in ("mix_synthetic_real", "mix_real", "mix_real_repeated"):
        listed = mixing_arm_lists(arm, tmp_path / "data", tmp_path)
        real = listed[listed["source"] == "real"]
        assert real.groupby("path")["split"].nunique().max() == 1  # copies stay on their image's side
        sides[arm] = {split: set(real.loc[real["split"] == split, "path"]) for split in ("train", "val")}
        if arm == "mix_real_repeated":
            assert len(real) == 300 + 25  # repeated to the mixed arm's count (mixing.n_synthetic + k)
        else:
            assert len(real) == 25
    reference = sides["mix_real"]
    assert len(reference["train"]) == 20 and len(reference["val"]) == 5
    assert sides["mix_synthetic_real"] == reference and sides["mix_real_repeated"] == reference


def test_a_test_set_is_never_subsampled(two_folders):
    synthetic, _, test = two_folders
    with pytest.raises(
        CxrsynError, match="^test set real sets max_per_class: a test set is never subsampled"
    ):
        make(synthetic, PhantomFolder(**{**test.__dict__, "max_per_class": 2}))


@pytest.fixture(scope="module")
def rsna_root(tmp_path_factory):
    return write_rsna_root(tmp_path_factory.mktemp("rsna"), rsna_patients(30, 30, 4, seed=5), image_size=48)


def rsna(root, tmp_path, **kwargs) -> RSNA:
    return RSNA(root=str(root), cache_dir=str(tmp_path / "cache"), show_progress=False, **kwargs)


def test_rsna_train_and_test_splits_are_patient_disjoint_and_the_guard_refuses_overlap(rsna_root, tmp_path):
    train = rsna(rsna_root, tmp_path, split="train", split_fraction=0.5)
    test = rsna(rsna_root, tmp_path, split="test", split_fraction=0.5)
    datamodule = make(train, test)
    train_patients = set(datamodule.tables["train"]["patient"]) | set(datamodule.tables["val"]["patient"])
    assert train_patients and not train_patients & set(datamodule.tables["real"]["patient"])
    assert datamodule.summary["overlap"]["found"] == []
    # the test side lists the training patients it held out, in the run folder
    written = datamodule.save_lists(tmp_path / "run")
    held_out = (tmp_path / "run" / written["held_out/rsna"]).read_text().split()
    assert set(held_out) >= train_patients and not set(held_out) & set(datamodule.tables["real"]["patient"])

    with pytest.raises(CxrsynError, match=r"of test set real are also training/validation images") as error:
        make(rsna(rsna_root, tmp_path, split="all"), test)  # training on every patient
    assert "\n" not in str(error.value)


def test_the_guard_refuses_another_image_of_a_test_patient(tmp_path):
    """Two different images of one Kermany patient, one on each side: the patient leaks."""
    from cxrsyn.data.overlap import find_overlaps

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(name.encode() * 10)

    def table(name: str, path: str, dataset: str = "kermany") -> pd.DataFrame:
        return pd.DataFrame(
            {"file": [str(tmp_path / name)], "path": [path], "patient": ["person1"], "dataset": [dataset]}
        )

    train, test = table("a.png", "person1_bacteria_1.jpeg"), table("b.png", "person1_virus_7.jpeg")
    (overlap,) = find_overlaps(train, {"kermany": test})
    assert overlap.how == "from the same patient" and overlap.example_test == "person1_virus_7.jpeg"
    # the same patient id in a generated set is a prompt, not a person: not compared
    assert find_overlaps(table("a.png", "x.png", "folder"), {"kermany": test}) == []
    assert find_overlaps(train, {"kermany": test.assign(patient="person2")}) == []
