"""Bad images and bad config: one line naming the file or key, no traceback, nothing silent."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.encaps import encapsulate, generate_fragmented_frames

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import write_manifest
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.dicom import read_dicom
from cxrsyn.data.images import read_grayscale
from cxrsyn.data.label_tables import header_problem
from cxrsyn.data.sources import DatasetFolder
from cxrsyn.testing.datasets.common import chest_pixels, write_dicom
from tests.conftest import compose_config, run_cli, tiny_overrides


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A valid grayscale PNG of side x side pixels (all black) that is under a megabyte on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def folder_with_bomb(tmp_path_factory) -> Path:
    """A dataset folder: eight 16-bit PNGs holding 10-bit values, and a 30000 x 30000 decompression bomb."""
    root = tmp_path_factory.mktemp("bomb")
    (root / "images").mkdir()
    rows = []
    for i in range(8):
        values = (chest_pixels(48, i % 2, seed=i).astype(np.uint16) * 4).astype(np.uint16)  # 0..1020
        Image.fromarray(values).save(root / "images" / f"deep{i}.png")
        rows.append({"path": f"images/deep{i}.png", "label": i % 2})
    bomb_png(root / "images" / "bomb.png")
    rows.append({"path": "images/bomb.png", "label": 1})
    write_manifest(root, rows)
    return root


def test_a_decompression_bomb_is_a_bad_file_with_a_configurable_limit(folder_with_bomb):
    skipped = DatasetFolder(root=str(folder_with_bomb), on_bad_file="skip").index()
    assert len(skipped.table) == 8
    ((entry),) = skipped.skipped
    assert entry["path"].endswith("bomb.png") and "900,000,000 pixels" in entry["reason"]
    with pytest.raises(CxrsynError, match="bomb.png.*max_image_pixels") as error:
        DatasetFolder(root=str(folder_with_bomb)).index()
    assert "\n" not in str(error.value)
    # the limit is the source's: lowered, the 48 x 48 images (2,304 pixels) are bad files too
    small = DatasetFolder(root=str(folder_with_bomb), on_bad_file="skip", max_image_pixels=2000).index()
    assert small.table.empty and len(small.skipped) == 9
    # a PNG listed in a label table is checked from its header bytes; decoding one is one line too
    assert "max_image_pixels" in header_problem(str(folder_with_bomb / "images" / "bomb.png"))
    with pytest.raises(CxrsynError, match="too large to decode"):
        read_grayscale(folder_with_bomb / "images" / "bomb.png")


def test_the_data_tool_skips_a_bomb_without_a_traceback(folder_with_bomb, tmp_path):
    result = run_cli(
        "cxrsyn.data", "summarize", "data=folder", f"data.root={folder_with_bomb}", "data.on_bad_file=skip"
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 8 and summary["skipped"][0]["path"].endswith("bomb.png")
    assert "window=full_range" in summary["found"]["window_warning"]  # the 10-bit PNGs, said once


def test_deep_pngs_in_a_folder_have_padchest_windows_and_a_warning(folder_with_bomb, caplog):
    with caplog.at_level(logging.WARNING):
        index = DatasetFolder(root=str(folder_with_bomb), on_bad_file="skip").index()
    warning = index.found["window_warning"]
    assert "deep0.png holds values up to" in warning and "window=min_max" in warning
    assert any("window=full_range" in record.getMessage() for record in caplog.records)
    image = folder_with_bomb / "images" / "deep0.png"
    dark = read_grayscale(image, DatasetFolder(root=str(folder_with_bomb)).deep_window())
    assert dark.max() < 1 / 16  # what full_range does to 10-bit values: nearly black
    for window in ("min_max", "percentile"):
        source = DatasetFolder(root=str(folder_with_bomb), on_bad_file="skip", window=window)
        assert "window_warning" not in source.index().found
        assert read_grayscale(image, source.deep_window()).max() == pytest.approx(1.0)
    cfg = compose_config("data_tools", ["data=folder", "data.root=x", "data.window=percentile"])
    assert cfg.data.window == "percentile" and list(cfg.data.window_percentiles) == [0.5, 99.5]


def test_corrupt_jpeg_dicom_says_corrupt_without_pydicom_tracebacks(tmp_path, caplog):
    path = write_dicom(tmp_path / "corrupt.dcm", chest_pixels(64, 1, seed=0))
    dataset = pydicom.dcmread(path)
    jpeg = b"".join(next(generate_fragmented_frames(dataset.PixelData, number_of_frames=1)))
    dataset.PixelData = encapsulate([jpeg[:20] + bytes(200) + jpeg[220:]])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path)
    for decode in (lambda: read_dicom(path), lambda: decode_resized(path, Preprocessing(32))):
        caplog.clear()
        with caplog.at_level(logging.DEBUG), pytest.raises(CxrsynError) as error:
            decode()
        line = str(error.value)
        assert "pixel data are corrupt" in line and str(path) in line and "\n" not in line
        assert "pip install" not in line  # the decoders are installed: they failed on the data
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_truncated_checkpoint_is_one_line_for_init_from_and_resume(tiny_phantom, tmp_path):
    from cxrsyn.training.run import train

    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"net.w": torch.zeros(1000)}, "epoch": 3}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(truncated, resumed / "checkpoints" / "last.ckpt")
    cases = {
        "init_from": [f"init_from={truncated}", f"paths.output_dir={tmp_path / 'a'}"],
        "ckpt_path": ["ckpt_path=last", f"paths.output_dir={resumed}"],
    }
    for option, extra in cases.items():
        cfg = compose_config("train", [*tiny_overrides(tiny_phantom, **{"gradcam.enabled": False}), *extra])
        with pytest.raises(CxrsynError, match=f"{option}=.*is not a readable checkpoint") as error:
            train(cfg)
        assert "\n" not in str(error.value)


VALUE_CASES = {
    "datamodule.image_size=abc": "datamodule.image_size='abc' is not allowed: datamodule.image_size must be a whole number",
    "datamodule.image_size=-5": "datamodule.image_size=-5 is not allowed",
    "data.crop_bottom_fraction=abc": "data.crop_bottom_fraction='abc' is not allowed: data.crop_bottom_fraction must be a number in [0, 1)",
    "data.crop_bottom_fraction=1.0": "data.crop_bottom_fraction=1.0 is not allowed",
    "data.crop_bottom_fraction=-0.1": "data.crop_bottom_fraction=-0.1 is not allowed",
    "+test_sets.phantom_real.crop_bottom_fraction=1": "test_sets.phantom_real.crop_bottom_fraction=1 is not allowed",
    "+data.on_bad_file=ignore": "data.on_bad_file='ignore' is not allowed: data.on_bad_file must be one of error, skip",
    "trainer.max_epochs=two": "trainer.max_epochs='two' is not allowed",
    "+epochs=5": "+epochs adds a key that nothing reads, so it would be ignored; did you mean trainer.max_epochs",
    "+trainer.epochs=5": "+trainer.epochs is not a setting of trainer (lightning.pytorch.Trainer)",
    "+model.dropout=0.2": "did you mean model.drop_rate?",
    "+pretrain.epochs=1": "did you mean pretrain.max_epochs",
}
ALLOWED_ADDITIONS = [
    ["+experiment=crop_ablation"],
    ["+data@pretrain.data=phantom", "+pretrain.max_epochs=1"],
    ["+test_sets.other={_target_: cxrsyn.data.sources.DatasetFolder, root: x}"],
    ["+trainer.profiler=simple"],
    ["+callbacks.stop={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/auroc}"],
    ["+datamodule.augmentation.rotate_degrees=10"],
    ["data=mix_real", "+mixing.k=25"],  # read by an interpolation of the data config
]


def test_bad_values_and_unread_keys_are_one_line_naming_key_value_and_what_is_allowed(tmp_path):
    from cxrsyn.core.config import CONF_DIR
    from cxrsyn.core.validation import check_config

    base = ["source=phantom", f"paths.data_dir={tmp_path}"]
    for override, message in VALUE_CASES.items():
        cfg = compose_config("train", [*base, override])
        with pytest.raises(CxrsynError) as error:
            check_config(cfg, [*base, override], CONF_DIR)
        assert message in str(error.value) and "\n" not in str(error.value), (override, str(error.value))
    for overrides in ALLOWED_ADDITIONS:
        check_config(compose_config("train", [*base, *overrides]), [*base, *overrides], CONF_DIR)
    for name, overrides in (
        ("evaluate", ["ckpt_path=x"]),
        ("audit", []),
        ("generate", []),
        ("postprocess", ["in_dir=a", "out_dir=b"]),
        ("data_tools", []),
    ):
        check_config(compose_config(name, overrides), overrides, CONF_DIR)  # the shipped configs pass


@pytest.mark.slow
def test_the_commands_print_one_line_for_bad_values_and_unread_keys(tmp_path):
    result = run_cli("cxrsyn.train", "datamodule.image_size=abc", f"hydra.run.dir={tmp_path / 'a'}")
    assert_one_line_error(result, "datamodule.image_size='abc'", "must be a whole number >= 8")
    result = run_cli("cxrsyn.train", "+epochs=5", f"hydra.run.dir={tmp_path / 'b'}")
    assert_one_line_error(result, "+epochs", "did you mean trainer.max_epochs")
    result = run_cli("cxrsyn.postprocess", "in_dir=a", "out_dir=b", "crop_bottom_fraction=1.0")
    assert_one_line_error(result, "crop_bottom_fraction=1.0 is not allowed", "[0, 1)")


def test_duplicate_seeds_are_refused_before_a_study_starts(tmp_path):
    from cxrsyn.core.config import duplicate_sweep_message

    result = run_cli("cxrsyn.train", "-m", "seed=0,0", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_line_error(result, "seed sweeps 0 more than once")
    assert not (tmp_path / "sweep").exists()
    assert duplicate_sweep_message(["seed=0,1,2", "data=a,b"]) is None


def test_the_report_counts_each_arm_and_seed_once(tmp_path, capsys):
    """Two folders of one arm and seed (a repeated job) are one replicate: the study comparison pairs one
    seed, and report.json lists the folder left out."""
    from cxrsyn.reporting.write import write_report
    from tests.reporting.test_report import make_run

    make_run(tmp_path / "0", "synthetic_raw", 0, 0.2)
    make_run(tmp_path / "1", "synthetic_cropped", 0, 1.5)
    make_run(tmp_path / "2", "synthetic_cropped", 0, 1.5)
    report = write_report(tmp_path, n_resamples=50, figures=False)
    assert report["runs"] == 2 and report["duplicates"] == {"2": "1"}
    assert {row["seeds"] for row in report["summary"]} == {1}
    assert all(verdict["n_seeds"] == 1 for verdict in report["study_comparisons"])
    assert "repeat an arm and seed already counted" in capsys.readouterr().out
