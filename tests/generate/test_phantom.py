import dataclasses

import numpy as np
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import sha256_of_file
from cxrsyn.core.manifest import read_manifest
from cxrsyn.phantom.grid import GridCell
from cxrsyn.phantom.simulator import PhantomSpec, _stamp_watermark, render, write_phantom_dataset

ATTRIBUTES = {"sex": "female", "age_band": "40-64", "habitus": "average", "projection": "PA erect"}


def twins(spec: PhantomSpec, seed: int):
    """The pneumonia and the normal image drawn from one seed: same anatomy, same style."""
    return [render(GridCell(0, label, ATTRIBUTES, seed), spec) for label in (1, 0)]


def test_rendering_is_deterministic():
    spec = PhantomSpec(domain="real_like", image_size=64)
    (a, record_a), (b, record_b) = (render(GridCell(0, 1, ATTRIBUTES, 42), spec) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert record_a == record_b


def test_domains_differ_in_size_and_framing():
    generator = [render(GridCell(0, 0, ATTRIBUTES, s), PhantomSpec(image_size=96))[0] for s in range(6)]
    real = [
        render(GridCell(0, 0, ATTRIBUTES, s), PhantomSpec(domain="real_like", image_size=96))[0]
        for s in range(6)
    ]
    assert {image.shape for image in generator} == {(96, 96)}
    assert len({image.shape for image in real}) > 1
    assert all(image.shape[0] >= image.shape[1] for image in real)  # portrait, like a chest film


@pytest.mark.parametrize("seed", range(5))
def test_consolidation_lies_inside_the_lung_fields(seed):
    spec = PhantomSpec(domain="real_like", image_size=128, shortcut_strength=0.0)
    (pneumonia, record), (normal, _) = twins(spec, seed)
    assert record["finding"] != "clear lungs"
    difference = pneumonia.astype(int) - normal.astype(int)
    height, width = difference.shape
    assert difference.max() >= 20  # visible opacity
    assert difference.min() >= -2  # consolidation only adds density
    outside = np.zeros_like(difference, bool)
    outside[:, : width // 20] = outside[:, -width // 20 :] = True  # lateral to the body
    outside[-height // 20 :] = True  # below the diaphragm
    outside[:, width // 2 - width // 50 : width // 2 + width // 50] = True  # the spine and mediastinum
    assert np.abs(difference[outside]).max() <= 2


def test_full_shortcut_ties_the_defects_to_the_class():
    spec = PhantomSpec(image_size=64, shortcut_strength=1.0, framing_shortcut=True)
    for seed in range(8):
        (_, pneumonia), (_, normal) = twins(spec, seed)
        assert (pneumonia["watermark"], normal["watermark"]) == (1, 0)
        assert pneumonia["below_diaphragm_fraction"] > normal["below_diaphragm_fraction"]


def test_zero_shortcut_makes_the_defects_independent_of_the_class():
    spec = PhantomSpec(image_size=64, shortcut_strength=0.0, framing_shortcut=True)
    seen = set()
    for seed in range(12):
        (_, pneumonia), (_, normal) = twins(spec, seed)
        assert pneumonia["watermark"] == normal["watermark"]
        assert pneumonia["below_diaphragm_fraction"] == normal["below_diaphragm_fraction"]
        seen.add(normal["watermark"])
    assert seen == {0, 1}


def test_real_like_images_carry_no_watermark():
    spec = PhantomSpec(domain="real_like", image_size=64, shortcut_strength=1.0)
    assert all(record["watermark"] == 0 for seed in range(6) for _, record in twins(spec, seed))


def test_watermark_sits_in_the_bottom_band_the_crop_removes():
    for size in (PhantomSpec().watermark_size, 0.1):  # the default and the largest allowed
        marked = _stamp_watermark(np.zeros((128, 100), np.float32), size)
        rows, columns = np.nonzero(marked)
        assert rows.size > 0
        assert rows.min() >= int(0.7 * 128)  # inside the bottom 30% that the paper's crop removes
    assert columns.min() >= 50  # bottom-right, where the sparkle logo sits


def test_dataset_folder_is_complete_and_reused(tmp_path):
    spec = PhantomSpec(n_per_class=5, image_size=48)
    out = write_phantom_dataset(tmp_path / "set", spec, show_progress=False, workers=1)
    table = read_manifest(out)
    assert len(table) == 10 and table["label"].sum() == 5
    for column in (
        "sex",
        "age_band",
        "age",
        "habitus",
        "projection",
        "finding",
        "watermark",
        "seed",
        "sha256",
    ):
        assert column in table.columns
    assert all(
        sha256_of_file(out / p) == digest for p, digest in zip(table["path"], table["sha256"], strict=True)
    )
    stamp = (out / "manifest.csv").stat().st_mtime_ns
    write_phantom_dataset(out, spec, show_progress=False)
    assert (out / "manifest.csv").stat().st_mtime_ns == stamp  # reused, not rewritten
    write_phantom_dataset(out, dataclasses.replace(spec, n_per_class=6), show_progress=False, workers=1)
    assert len(read_manifest(out)) == 12  # settings changed: rebuilt
    # no partial or stale folder left (the lock parallel jobs take while one of them builds it stays)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["set"]


def test_parallel_and_serial_writes_are_identical(tmp_path):
    spec = PhantomSpec(n_per_class=20, image_size=48)
    serial = read_manifest(write_phantom_dataset(tmp_path / "a", spec, show_progress=False, workers=1))
    parallel = read_manifest(write_phantom_dataset(tmp_path / "b", spec, show_progress=False, workers=2))
    assert serial["sha256"].tolist() == parallel["sha256"].tolist()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("domain", "cartoon", "phantom domain 'cartoon' is unknown"),
        ("shortcut_strength", 1.5, r"shortcut_strength=1.5 must lie in \[0, 1\]"),
        ("attributes", {"sex": ["other"]}, "phantom cannot draw attribute values"),
        ("field_of_view", "abdomen", "phantom field_of_view='abdomen' is unknown"),
        ("watermark_rate", -0.1, r"watermark_rate=-0.1 must lie in \[0, 1\]"),
        ("watermark_shape", "logo", "watermark_shape='logo' is unknown"),
        ("attributes", {"age_band": ["5-1"]}, "any 'low-high' in years"),
        ("attributes", {"age_band": ["children"]}, "phantom cannot draw attribute values"),
    ],
)
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(CxrsynError, match=message):
        PhantomSpec(**{field: value})


def test_real_like_bottom_labels_sit_in_the_band_and_leave_other_films_unchanged():
    plain = PhantomSpec(domain="real_like", image_size=64)
    marked = PhantomSpec(domain="real_like", image_size=64, bottom_mark_rate=1.0)
    for label in (0, 1):
        cell = GridCell(0, label, ATTRIBUTES, 5)
        before, after = render(cell, plain)[0], render(cell, marked)[0]
        rows = np.nonzero((before != after).any(axis=1))[0]
        assert rows.size > 0 and rows.min() >= int(0.7 * before.shape[0])
    with pytest.raises(CxrsynError, match="bottom_mark_rate"):
        PhantomSpec(domain="real_like", bottom_mark_rate=1.5)


def test_by_default_only_the_watermark_tracks_the_class():
    """The default generator artifacts: the class-linked watermark in the bottom band, the field of view
    independent of the class (framing_shortcut false), so the paper's crop removes every class-linked defect."""
    spec = PhantomSpec(image_size=64, shortcut_strength=1.0)
    for seed in range(6):
        (_, pneumonia), (_, normal) = twins(spec, seed)
        assert (pneumonia["watermark"], normal["watermark"]) == (1, 0)
        assert pneumonia["below_diaphragm_fraction"] == normal["below_diaphragm_fraction"]


def test_watermark_rate_sets_the_share_of_marked_films_and_none_draws_no_mark():
    def marks(**settings):
        spec = PhantomSpec(image_size=48, **settings)
        return [[record["watermark"] for _, record in twins(spec, seed)] for seed in range(10)]

    assert marks(watermark_rate=1.0, shortcut_strength=0.0) == [[1, 1]] * 10  # every film, either class
    assert marks(watermark_rate=0.0, shortcut_strength=0.0) == [[0, 0]] * 10
    assert (
        marks(watermark_rate=0.2, shortcut_strength=1.0) == [[1, 0]] * 10
    )  # the full shortcut whatever rate
    assert marks(watermark_shape="none", shortcut_strength=1.0) == [[0, 0]] * 10
    unmarked = PhantomSpec(image_size=48, watermark_shape="none", watermark_rate=1.0)
    marked = PhantomSpec(image_size=48, watermark_shape="label", watermark_rate=1.0)
    plain, stamped = (render(GridCell(0, 0, ATTRIBUTES, 3), spec)[0] for spec in (unmarked, marked))
    rows = np.nonzero((plain != stamped).any(axis=1))[0]
    assert rows.size > 0 and rows.min() >= int(0.7 * 48)  # the films differ by the mark alone


def test_field_of_view_decides_whether_the_crop_cuts_lesions():
    """extended: the film runs below the diaphragm and no lesion reaches the bottom 30%; chest: framed like a
    radiographer, so lower-zone lesions do (lesion_bottom_band_share is the opacity's share there)."""
    shares = {}
    for view in ("extended", "chest"):
        spec = PhantomSpec(image_size=96, field_of_view=view, shortcut_strength=0.0)
        records = [render(GridCell(0, 1, ATTRIBUTES, seed), spec)[1] for seed in range(24)]
        shares[view] = [record["lesion_bottom_band_share"] for record in records]
        assert render(GridCell(0, 0, ATTRIBUTES, 1), spec)[1]["lesion_bottom_band_share"] is None
    assert max(shares["extended"]) == 0.0
    assert max(shares["chest"]) > 0.1
    (_, chest), (_, real) = (
        render(GridCell(0, 0, ATTRIBUTES, 2), PhantomSpec(image_size=96, field_of_view="chest", **extra))
        for extra in ({}, {"domain": "real_like"})
    )
    assert abs(chest["below_diaphragm_fraction"] - real["below_diaphragm_fraction"]) < 0.06


def _drawn(band: str, sex: str = "female", projection: str = "PA erect", n: int = 24) -> list[dict]:
    spec = PhantomSpec(domain="real_like", image_size=48)
    attributes = {"sex": sex, "age_band": band, "habitus": "average", "projection": projection}
    return [render(GridCell(0, 0, attributes, seed), spec)[1] for seed in range(n)]


def test_children_are_drawn_with_a_paediatric_habitus():
    """Kermany's ages (1-5): a larger heart for the chest, the thymus, no breast shadows; adolescents lose
    the thymus and gain breast shadows; adults keep their drawing (the child terms vanish from 18)."""
    toddlers, school, teens, adults = (_drawn(band) for band in ("1-5", "6-11", "12-17", "18-39"))
    assert all(1 <= row["age"] <= 5 and row["thymus"] == 1 and row["breast_shadows"] == 0 for row in toddlers)
    assert all(row["thymus"] == 0 and row["breast_shadows"] == 0 for row in school)
    assert any(row["breast_shadows"] == 1 for row in teens) and all(row["thymus"] == 0 for row in teens)
    assert all(row["breast_shadows"] == 1 and row["thymus"] == 0 for row in adults)
    ratio = {name: np.mean([row["cardiothoracic_ratio"] for row in rows]) for name, rows in
             (("toddlers", toddlers), ("adults", adults))}  # fmt: skip
    assert 0.45 <= ratio["toddlers"] <= 0.55 and ratio["toddlers"] > ratio["adults"] + 0.05
    assert all(row["breast_shadows"] == 0 for row in _drawn("18-39", sex="male"))
