"""The external test sets as configs: the `external` group, their phantom stand-ins, and a real training run
tested on NIH, CheXpert and PadChest trees written by the tests."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.data.chexpert import CheXpert
from cxrsyn.data.nih import NIH
from cxrsyn.data.padchest import PadChest
from cxrsyn.data.sources import PhantomFolder
from cxrsyn.testing.datasets.chexpert import CheXpertImage, write_chexpert_root
from cxrsyn.testing.datasets.nih import NihImage, write_nih_root
from cxrsyn.testing.datasets.padchest import PadChestImage, write_padchest_root
from cxrsyn.training.run import instantiate_node, train
from tests.conftest import compose_config, tiny_overrides

EXTERNAL = ["nih", "chexpert", "padchest"]


@pytest.mark.parametrize("source", ["real", "phantom"])
def test_external_group_adds_the_three_sets_to_a_study(source):
    cfg = compose_config(
        "train", ["+experiment=crop_ablation", f"source={source}", "test_sets=[rsna,kermany,external]"]
    )
    assert list(cfg.test_sets) == ["rsna", "kermany", *EXTERNAL]
    sets = {name: instantiate_node(cfg, f"test_sets.{name}", _convert_="object") for name in cfg.test_sets}
    if source == "phantom":
        assert all(isinstance(item, PhantomFolder) and item.domain == "real_like" for item in sets.values())
        assert len({item.root for item in sets.values()}) == len({item.seed for item in sets.values()}) == 5
    else:
        assert [type(sets[name]) for name in EXTERNAL] == [NIH, CheXpert, PadChest]
        assert (
            sets["padchest"].deep_window().method == "min_max"
            and sets["nih"].deep_window().method == "full_range"
        )
        assert all(item.on_bad_file == "error" and item.cache for item in sets.values())


def test_each_is_a_data_choice_and_a_missing_root_says_where_to_get_it(tmp_path):
    messages = {
        "nih": "download nih --root DIR",
        "chexpert": "Stanford AIMI",
        "padchest": "https://bimcv.cipf.es/bimcv-projects/padchest/",
    }
    for name, where in messages.items():
        cfg = compose_config("data_tools", [f"data={name}", f"data.root={tmp_path / 'absent'}"])
        with pytest.raises(CxrsynError, match=f"does not exist: .*{where}.*CXRSYN_{name.upper()}_ROOT"):
            instantiate_node(cfg, "data", _convert_="object").index()
        phantom = compose_config("data_tools", [f"data={name}", "source=phantom"])
        assert isinstance(instantiate_node(phantom, "data", _convert_="object"), PhantomFolder)


@pytest.mark.slow
def test_training_run_tested_on_the_external_sets(tmp_path, tiny_phantom):
    nih = write_nih_root(
        tmp_path / "nih",
        [
            NihImage(i, 0, "Pneumonia" if i % 2 else "No Finding", view="AP" if i % 3 else "PA")
            for i in range(1, 9)
        ],
    )
    chexpert = write_chexpert_root(
        tmp_path / "chexpert",
        [
            CheXpertImage(i, pneumonia=1 if i % 2 else None, no_finding=None if i % 2 else 1)
            for i in range(1, 9)
        ],
    )
    padchest = write_padchest_root(
        tmp_path / "padchest",
        [
            PadChestImage(f"{1000 + i}_x.png", ["pneumonia"] if i % 2 else ["normal"], patient_id=str(i))
            for i in range(1, 9)
        ],
    )
    overrides = [o for o in tiny_overrides(tiny_phantom) if not o.startswith("test_sets.")]
    overrides += [
        "test_sets=[external]",
        f"test_sets.nih.root={nih}",
        f"test_sets.chexpert.root={chexpert}",
        f"test_sets.padchest.root={padchest}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'run'}",
        "gradcam.enabled=false",
    ]
    metrics = train(compose_config("train", overrides))
    assert set(metrics["test_sets"]) == set(EXTERNAL)
    for name in EXTERNAL:
        result = metrics["test_sets"][name]
        assert (result["n"], result["n_pos"], result["skipped"]) == (8, 4, [])
        table = pd.read_csv(tmp_path / "run" / result["predictions"])
        assert {"patient", "age_band", "sex", "view"} <= set(table.columns) and table["patient"].notna().all()
    assert "subset of NIH" in metrics["test_sets"]["nih"]["note"]
    assert "note" not in metrics["test_sets"]["chexpert"]
    assert set(metrics["test_sets"]["nih"]["subgroups"]["view"]) == {"AP", "PA"}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test_sets"]["nih"]["note"] == metrics["test_sets"]["nih"]["note"]


def test_report_repeats_the_nih_note(tmp_path):
    from cxrsyn.reporting.write import write_report
    from tests.reporting.test_report import make_run

    for job, data in enumerate(("synthetic_raw", "synthetic_cropped")):
        metrics = make_run(tmp_path / str(job), data, 0, 1.0, test_sets=("rsna", "nih"))
        metrics["test_sets"]["nih"]["note"] = "RSNA images are a subset of NIH"
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path, n_resamples=50, figures=False)
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.count("**Note on nih.** RSNA images are a subset of NIH.") == 1
    assert "Note on rsna" not in markdown
