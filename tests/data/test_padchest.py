"""PadChest reader on trees written as BIMCV ships them (16-bit PNGs holding 10- or 12-bit values), the
windowing of deep images through decode, cache and dataset, and the real label table that torchxrayvision
ships (PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz)."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.images import DeepWindow, read_grayscale
from cxrsyn.data.padchest import PadChest
from cxrsyn.data.summary import summarize, verify
from cxrsyn.testing.datasets.common import write_png16
from cxrsyn.testing.datasets.padchest import PadChestImage, write_padchest_root
from tests.data.shipped_tables import link_images, torchxrayvision_file


def torchxrayvision_known_broken() -> set[str]:
    """The list of files missing from or broken in the download, read from the installed torchxrayvision's
    PC_Dataset source (its ``missing = [...]``): an independent copy of what the reader leaves out."""
    import torchxrayvision

    tree = ast.parse(textwrap.dedent(inspect.getsource(torchxrayvision.datasets.PC_Dataset.__init__)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "missing":
            return set(ast.literal_eval(node.value))
    raise AssertionError("torchxrayvision's PC_Dataset no longer lists its missing files")


BROKEN = "216840111366964012819207061112010307142602253_04-014-084.png"


def image(number: int, labels: list[str] | None, **settings) -> PadChestImage:
    return PadChestImage(
        image_id=f"{1000 + number}{'7' * 30}_{number:02d}-ab.png",
        labels=labels,
        patient_id=f"{500 + number}",
        **settings,
    )


IMAGES = [
    image(1, ["pneumonia"]),
    image(2, ["atypical pneumonia", "infiltrates"], projection="AP_horizontal", method="RNN_model"),
    image(3, ["normal"]),
    image(4, ["normal", ""], projection="AP", image_dir=1),  # an empty label, as the real table has
    image(5, ["pneumonia", "normal"]),  # contradictory
    image(6, ["normal", "cardiomegaly"]),  # not only normal
    image(7, ["pneumonia"], projection="L"),  # lateral
    image(8, None),  # no labels
    image(9, ["pneumothorax"]),
    image(10, ["exclude", "pneumonia"]),
    image(
        11, ["normal"], birth="2010.0", study_date="20150301", pediatric="PED", sex="M", bits=10, image_dir=1
    ),
    image(
        12,
        ["pneumonia", "pleural effusion"],
        projection="AP",
        sex="O",
        manufacturer="ImagingDynamicsCompanyLtd",
    ),
    image(13, ["normal"], method="RNN_model"),
    PadChestImage(BROKEN, ["normal"], patient_id="999"),
]
DEFAULT = {1: 1, 2: 1, 12: 1, 3: 0, 4: 0, 11: 0, 13: 0}


@pytest.fixture(scope="module")
def padchest_root(tmp_path_factory) -> Path:
    return write_padchest_root(tmp_path_factory.mktemp("padchest"), IMAGES)


def index(root: Path, **settings):
    return PadChest(root=str(root), show_progress=False, **settings).index()


def numbers(table: pd.DataFrame) -> dict[int, int]:
    return {int(p) - 500: int(label) for p, label in table[["patient", "label"]].itertuples(index=False)}


def test_pneumonia_vs_normal(padchest_root):
    result = index(padchest_root)
    assert numbers(result.table) == DEFAULT
    assert result.skipped == []
    found = result.found
    assert found["without_labels"] == 1 and found["left_out_pneumonia_and_normal"] == 1
    assert found["left_out_marked_exclude"] == 1 and found["known_broken_left_out"] == [BROKEN]
    assert found["window"] == "min_max"
    assert set(result.table["path"].str.split("/").str[0]) == {"0", "1"}


def test_attributes(padchest_root):
    table = index(padchest_root).table.set_index("patient")
    child = table.loc["511"]
    assert (child["age"], child["age_band"], child["sex"], bool(child["pediatric"])) == (5, "0-17", "M", True)
    supine = table.loc["502"]
    assert (supine["view"], supine["projection"], supine["label_method"]) == ("AP", "AP_horizontal", "rnn")
    assert supine["findings"] == "atypical pneumonia|infiltrates"
    assert table.loc["512", ["sex", "manufacturer"]].tolist() == ["O", "ImagingDynamicsCompanyLtd"]
    assert table.loc["501", ["age", "study", "label_method"]].tolist() == [64, "1001" + "7" * 30, "physician"]


def test_selections(padchest_root):
    assert numbers(index(padchest_root, labels_by="physician").table) == {1: 1, 12: 1, 3: 0, 4: 0, 11: 0}
    assert numbers(index(padchest_root, projection="PA").table) == {1: 1, 3: 0, 11: 0, 13: 0}
    with_broken = index(padchest_root, exclude_known_broken=False).table
    assert len(with_broken) == len(DEFAULT) + 1 and "999" in set(with_broken["patient"])
    with pytest.raises(
        CxrsynError, match="data.projection=.*'LAT'.*use one or a list of PA, AP, AP_horizontal"
    ):
        index(padchest_root, projection=["PA", "LAT"])
    with pytest.raises(CxrsynError, match="data.labels_by='radiologist' for PadChest"):
        index(padchest_root, labels_by="radiologist")


def test_flat_layout_and_plain_csv(tmp_path):
    root = write_padchest_root(tmp_path, IMAGES[:4], layout="flat", compressed=False)
    result = index(root)
    assert result.found["label_file"].endswith(".csv") and numbers(result.table) == {1: 1, 2: 1, 3: 0, 4: 0}
    assert not result.table["path"].str.contains("/").any()


@pytest.fixture
def damaged_root(tmp_path) -> tuple[Path, dict[str, str]]:
    root = write_padchest_root(tmp_path / "pc", IMAGES)
    files = {path.name: path for path in root.glob("*/*.png")}
    files[IMAGES[0].image_id].unlink()
    files[IMAGES[2].image_id].write_bytes(b"")
    files[IMAGES[3].image_id].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16)  # a signature, then nothing
    reasons = {
        IMAGES[0].image_id: "image file is missing",
        IMAGES[2].image_id: "empty",
        IMAGES[3].image_id: "broken PNG header",
    }
    return root, reasons


def test_bad_files_follow_the_policy(damaged_root):
    root, reasons = damaged_root
    with pytest.raises(CxrsynError) as caught:
        index(root)
    assert "\n" not in str(caught.value) and "on_bad_file=skip for PadChest" in str(caught.value)
    result = index(root, on_bad_file="skip")
    listed = {Path(item["path"]).name: item["reason"] for item in result.skipped}
    assert set(listed) == set(reasons)
    for name, reason in reasons.items():
        assert reason in listed[name]
    assert len(result.table) == len(DEFAULT) - 3


def test_truncated_png_is_skipped_when_decoded_into_the_cache(tmp_path):
    root = write_padchest_root(tmp_path / "pc", IMAGES[:4])
    victim = next(root.glob(f"*/{IMAGES[2].image_id}"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # the header is intact: only decoding finds it
    source = PadChest(root=str(root), cache=True, cache_dir=str(tmp_path / "cache"), show_progress=False)
    with pytest.raises(CxrsynError, match=f"{IMAGES[2].image_id}.*on_bad_file=skip"):
        CXRDataModule(
            test_sets={"padchest": source}, image_size=32, num_workers=0, cache_workers=1
        ).prepare_data()
    source.on_bad_file = "skip"
    datamodule = CXRDataModule(test_sets={"padchest": source}, image_size=32, num_workers=0, cache_workers=1)
    datamodule.setup("test")
    summary = datamodule.summary["test_sets"]["padchest"]
    assert summary["n"] == 3 and [Path(item["path"]).name for item in summary["skipped"]] == [
        IMAGES[2].image_id
    ]


def test_wrong_columns_bad_labels_and_missing_root(tmp_path):
    root = write_padchest_root(tmp_path / "pc", IMAGES[:3], compressed=False)
    table_file = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    rows = pd.read_csv(table_file, dtype=str)
    rows.rename(columns={"Projection": "View"}).to_csv(table_file, index=False)
    with pytest.raises(CxrsynError, match=r"lacks column\(s\) Projection .*not the PadChest label table"):
        index(root)
    rows.loc[1, "Labels"] = "normal, pneumonia"
    rows.to_csv(table_file, index=False)
    with pytest.raises(CxrsynError, match=r"line 3: Labels 'normal, pneumonia' is not a list of labels"):
        index(root)
    table_file.unlink()
    with pytest.raises(CxrsynError, match="has no PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"):
        index(root)
    with pytest.raises(CxrsynError, match="PadChest root .* does not exist: get PadChest from BIMCV"):
        index(tmp_path / "absent")


# ----------------------------------------------------------------------------------------- 16-bit windowing
@pytest.fixture
def deep_png(tmp_path) -> tuple[Path, np.ndarray]:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint8)
    path = tmp_path / "deep.png"
    stored = write_png16(path, pixels, bits=12)
    assert Image.open(path).mode == "I;16" and stored.max() < 4096
    return path, stored


def test_windows_on_a_12_bit_png(deep_png):
    path, stored = deep_png
    values = stored.astype(np.float64)
    np.testing.assert_allclose(read_grayscale(path), values / 65535, atol=1e-6)  # the default: nearly black
    expected = (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(read_grayscale(path, DeepWindow("min_max")), expected, atol=1e-6)


def test_percentile_window_on_a_hand_made_case(tmp_path):
    stored = np.concatenate([np.arange(1000, 2000), [0, 4095]]).astype(np.uint16).reshape(1, -1)
    stored = np.repeat(stored, 2, axis=0)  # 2 x 1002: values 1000..1999 and two outliers per row
    Image.fromarray(stored).save(tmp_path / "p.png")
    image = read_grayscale(tmp_path / "p.png", DeepWindow("percentile", (1, 99)))
    # 2,004 sorted values (each twice): 0 0 1000 1000 1001 1001 ... 1999 1999 4095 4095. Linear percentiles:
    # 1% at position 0.01 * 2003 = 20.03, between the values at 20 and 21, both 1009; 99% at 1982.97: 1990
    low, high = 1009.0, 1990.0
    np.testing.assert_allclose(
        image[0, :1000], np.clip((np.arange(1000, 2000) - low) / (high - low), 0, 1), atol=1e-5
    )
    assert image[0, 1000] == 0.0 and image[0, 1001] == 1.0


def test_eight_bit_images_ignore_the_window(tmp_path):
    Image.fromarray(np.array([[10, 20], [30, 40]], np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_allclose(
        read_grayscale(tmp_path / "a.png", DeepWindow("min_max")), [[10, 20], [30, 40]] / np.float32(255)
    )


def test_bad_window_settings():
    with pytest.raises(
        CxrsynError,
        match=r"window 'auto' \(data.window\) is unknown; use one of full_range, min_max, percentile",
    ):
        DeepWindow("auto")
    with pytest.raises(
        CxrsynError, match=r"percentiles \[99, 1\] \(data.window_percentiles\) must be two numbers"
    ):
        DeepWindow("percentile", (99, 1))


def test_the_window_reaches_the_cache_and_the_dataset(padchest_root, tmp_path):
    """PadChest's min-max window gives full-contrast images in the cache and when read from the files; the
    default window (a folder's) would leave them nearly black. The window is part of the cache key only when
    it is not the default, so caches built before it existed stay valid."""
    results = {}
    for window in ("min_max", "full_range"):
        for cache in (True, False):
            source = PadChest(
                root=str(padchest_root),
                window=window,
                cache=cache,
                cache_dir=str(tmp_path),
                show_progress=False,
            )
            datamodule = CXRDataModule(
                test_sets={"padchest": source}, image_size=32, num_workers=0, cache_workers=1
            )
            datamodule.prepare_data()
            datamodule.setup("test")
            images = [datamodule.dataset("test/padchest")[i]["image"] for i in range(len(DEFAULT))]
            results[window, cache] = np.stack([image.numpy() for image in images])
    for cache in (True, False):
        assert results["min_max", cache].max() > 0.95 and results["full_range", cache].max() < 0.07
    np.testing.assert_allclose(results["min_max", True], results["min_max", False], atol=1.5 / 255)
    assert len(list(tmp_path.glob("padchest-*"))) == 2
    assert (
        "window" not in Preprocessing().as_dict()
        and "window" in Preprocessing(window=DeepWindow("min_max")).as_dict()
    )
    file = next(padchest_root.glob("0/*.png"))
    assert decode_resized(file, Preprocessing(32, window=DeepWindow("min_max"))).max() > 200
    assert decode_resized(file, Preprocessing(32)).max() < 20


# ------------------------------------------------------------------------------------------- the real table
@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The shipped table, with a hard link (to a 16-bit PNG) at every image whose labels mention pneumonia or
    normal, in its ImageDir folder."""
    root = tmp_path_factory.mktemp("padchest_real")
    name = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
    shutil.copy(torchxrayvision_file(name), root / name)
    rows = pd.read_csv(
        root / name, dtype=str, usecols=["ImageID", "ImageDir", "Projection", "MethodLabel", "Labels"]
    )
    mentioned = rows[rows["Labels"].fillna("").str.contains("pneumonia|normal")]
    template = root / "template.png"
    write_png16(template, np.full((8, 8), 100, np.uint8))
    targets = (
        root / folder / image_id
        for folder, image_id in zip(mentioned["ImageDir"], mentioned["ImageID"], strict=True)
    )
    assert link_images(template, targets) == len(mentioned)
    template.unlink()
    return root, rows


def reference_counts(rows: pd.DataFrame, physician_only: bool = False) -> tuple[int, int]:
    """Pneumonia and normal counts from the raw rows, parsed with a regular expression (the reader uses
    ast.literal_eval), for PA, AP and AP_horizontal, without torchxrayvision's 21 known-broken files."""
    rows = rows[rows["Labels"].notna() & rows["Projection"].isin(["PA", "AP", "AP_horizontal"])]
    if physician_only:
        rows = rows[rows["MethodLabel"] == "Physician"]
    labels = rows["Labels"].map(lambda text: {item.strip() for item in re.findall(r"'([^']*)'", text)} - {""})
    pneumonia = labels.map(lambda names: "pneumonia" in names or "atypical pneumonia" in names)
    positive = pneumonia & labels.map(lambda names: "normal" not in names and "exclude" not in names)
    normal = labels.map(lambda names: names == {"normal"})
    known_broken = rows["ImageID"].isin(torchxrayvision_known_broken())
    return int((positive & ~known_broken).sum()), int((normal & ~known_broken).sum())


def test_real_table_counts(real_root):
    root, rows = real_root
    source = PadChest(root=str(root), show_progress=False)
    result = source.index()
    table = result.table
    assert reference_counts(rows) == (5221, 35941)
    assert (int(table["label"].sum()), int((table["label"] == 0).sum())) == (5221, 35941)
    assert (
        result.skipped == []
        and result.found["label_rows"] == 160861
        and len(result.found["known_broken_left_out"]) == 5
    )
    assert verify(source, summarize(source, result))["matches"] is True
    physician = PadChest(root=str(root), labels_by="physician", show_progress=False).index().table
    assert reference_counts(rows, physician_only=True) == (1094, 8925)
    assert (int(physician["label"].sum()), int((physician["label"] == 0).sum())) == (1094, 8925)
