"""The decode-once cache: contents, reuse, rebuild on change, resume after a crash, bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.cache import FAILED, META_NAME, STATE_NAME, TODO, build_cache
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.kermany import Kermany
from cxrsyn.data.rsna import RSNA
from cxrsyn.data.sources import BadFiles
from cxrsyn.testing.datasets.kermany import write_kermany_root
from cxrsyn.testing.datasets.rsna import RSNA_IMAGES, rsna_patients, write_rsna_root
from tests.conftest import run_cli

PREP = Preprocessing(image_size=32)


@pytest.fixture
def kermany(tmp_path):
    root = write_kermany_root(tmp_path / "kermany", {"test": (5, 6)}, quirks=False)
    return Kermany(root=str(root), cache=True, cache_dir=str(tmp_path / "cache"))


def build(source, prep=PREP, policy="error", workers=1):
    index = source.index()
    bad = BadFiles(policy, source.kind)
    bad.skipped = list(index.skipped)
    return build_cache(index.table, prep, source.cache_dir, source.name, bad, source.root, workers, False)


def test_cache_holds_each_image_decoded_once(kermany):
    result = build(kermany, workers=2)
    assert result.built and len(result.table) == 11
    images = np.load(result.folder / "images.npy")
    assert images.shape == (11, 32, 32) and images.dtype == np.uint8
    for file, row in result.table[["file", "cache_row"]].itertuples(index=False):
        np.testing.assert_array_equal(images[row], decode_resized(file, PREP))
    assert json.loads((result.folder / META_NAME).read_text())["complete"] is True


def test_complete_cache_is_reused_and_changes_rebuild(kermany):
    first = build(kermany)
    again = build(kermany)
    assert not again.built and again.folder == first.folder
    assert build(kermany, Preprocessing(image_size=48)).folder != first.folder  # preprocessing is in the key
    assert build(kermany, Preprocessing(image_size=32, resize="letterbox")).folder != first.folder
    file = first.table["file"].iloc[0]
    os.utime(file, ns=(0, 10**9))  # a source file changed
    assert build(kermany).folder != first.folder


def test_interrupted_build_resumes_without_redoing_done_images(kermany):
    result = build(kermany)
    folder = result.folder
    state = np.load(folder / STATE_NAME)
    state[5:] = TODO  # as if killed after the first chunk's rows 0-4 were flushed
    np.save(folder / STATE_NAME, state)
    meta = json.loads((folder / META_NAME).read_text())
    (folder / META_NAME).write_text(json.dumps({**meta, "complete": False}))
    images = np.load(folder / "images.npy", mmap_mode="r+")
    images[0] = 7  # a done image: must not be decoded again
    images[6] = 7  # a pending one: must be rewritten
    images.flush()
    del images
    resumed = build(kermany)
    assert resumed.built and resumed.folder == folder
    images = np.load(folder / "images.npy")
    assert (images[0] == 7).all()
    np.testing.assert_array_equal(images[6], decode_resized(resumed.table["file"].iloc[6], PREP))


def test_undecodable_file_follows_policy_and_is_remembered(tmp_path):
    patients = rsna_patients(3, 3, 0, seed=2)
    root = write_rsna_root(tmp_path / "rsna", patients)
    victim = root / RSNA_IMAGES / f"{patients[1].patient_id}.dcm"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 400])  # truncated JPEG stream: the header still reads
    source = RSNA(
        root=str(root), cache=True, cache_dir=str(tmp_path / "cache"), workers=1, show_progress=False
    )
    with pytest.raises(CxrsynError) as caught:
        build(source)
    assert str(victim.relative_to(root)) in str(caught.value) and "\n" not in str(caught.value)
    skipped = build(source, policy="skip")
    assert len(skipped.table) == 5 and [item["path"] for item in skipped.skipped] == [
        str(victim.relative_to(root))
    ]
    assert (np.load(skipped.folder / STATE_NAME) == FAILED).sum() == 1
    again = build(source, policy="skip")  # a finished cache still reports what it left out
    assert not again.built and again.skipped == skipped.skipped


def test_datamodule_reads_test_sets_from_the_cache(kermany):
    datamodule = CXRDataModule(test_sets={"kermany": kermany}, image_size=32, num_workers=0, batch_size=4)
    datamodule.prepare_data()
    datamodule.setup("test")
    summary = datamodule.summary["test_sets"]["kermany"]
    assert summary["n"] == 11 and summary["cache"].startswith(kermany.cache_dir) and summary["skipped"] == []
    batch = next(iter(datamodule.test_dataloader()[0]))
    cached = np.load(os.path.join(summary["cache"], "images.npy"))
    np.testing.assert_allclose(batch["image"][:, 0].numpy(), cached[:4] / 255.0, atol=1e-6)


def test_prepare_cli_builds_the_cache_and_reports_it(tmp_path):
    root = write_kermany_root(tmp_path / "k", {"train": (2, 2), "test": (2, 2)}, quirks=False)
    args = [
        "prepare",
        "data=kermany",
        f"data.root={root}",
        f"paths.cache_dir={tmp_path}/c",
        "datamodule.image_size=40",
    ]
    result = run_cli("cxrsyn.data", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 8 and np.load(os.path.join(summary["cache"], "images.npy")).shape == (8, 40, 40)
    assert "decoded 8 images" in result.stdout
    rerun = run_cli("cxrsyn.data", *args)
    assert rerun.returncode == 0 and "decoded" not in rerun.stdout


def test_truncated_jpeg_and_dicom_without_pixels_are_listed_when_skipped(tmp_path):
    """Files whose header reads but whose pixels do not: found while decoding into the cache."""
    import pydicom

    kermany_root = write_kermany_root(tmp_path / "k", {"test": (3, 3)}, quirks=False, image_size=64)
    jpeg = sorted((kermany_root / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    jpeg.write_bytes(jpeg.read_bytes()[:400])
    patients = rsna_patients(2, 2, 0, seed=5)
    rsna_root = write_rsna_root(tmp_path / "r", patients)
    dicom = rsna_root / RSNA_IMAGES / f"{patients[0].patient_id}.dcm"
    dataset = pydicom.dcmread(dicom)
    del dataset.PixelData
    dataset.save_as(dicom)
    cases = [
        (
            Kermany(root=str(kermany_root), cache=True, cache_dir=str(tmp_path / "c")),
            jpeg,
            "could not be decoded",
        ),
        (
            RSNA(
                root=str(rsna_root), cache=True, cache_dir=str(tmp_path / "c"), workers=1, show_progress=False
            ),
            dicom,
            "has no pixel data",
        ),
    ]
    for source, victim, reason in cases:
        with pytest.raises(CxrsynError, match=f"{victim.name}: .*{reason}.*on_bad_file=skip"):
            build(source)
        result = build(source, policy="skip")
        assert [item["path"] for item in result.skipped] == [str(victim.relative_to(source.root))]
        assert reason in result.skipped[0]["reason"]
