"""Attribute fidelity, feature spaces and realism end to end: one audit command on the phantom prints the
attribute confusion tables and flags a planted projection swap (images asked for "AP supine" drawn as PA),
distances and PRDC in at least two feature spaces (the others skipped with their reason) and realism AUROCs
with CIs for the raw and the cropped set; a faithful set flags nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cxrsyn.data.sources import PhantomFolder
from cxrsyn.phantom.simulator import write_phantom_dataset
from tests.auditing.conftest import AUDIT_SIZE, SIZE, reference_overrides
from tests.conftest import compose_config, run_cli

READER_N = 60  # phantom films per class per domain that the stand-in readers are fitted on


@pytest.fixture(scope="module")
def swapped_set(audit_data: Path) -> Path:
    """Generator-like films all drawn PA erect, half of them asked for "AP supine" in the manifest: the
    generator ignored that projection."""
    root = audit_data / "projection_swap"
    folder = PhantomFolder(
        root=str(root),
        domain="generator_like",
        n_per_class=40,
        seed=5,
        image_size=SIZE,
        shortcut_strength=0.0,
        attributes={
            "sex": ["female", "male"],
            "age_band": ["18-39", "40-64", "65-90"],
            "projection": ["PA erect"],
        },
    )
    write_phantom_dataset(folder.root, folder.spec(), show_progress=False, workers=1)
    table = pd.read_csv(root / "manifest.csv")
    table["projection"] = ["AP supine" if i % 2 else "PA erect" for i in range(len(table))]
    table.to_csv(root / "manifest.csv", index=False)
    return root


def attribute_overrides(data_root: Path, reference: Path, tmp: Path, audit_data: Path) -> list[str]:
    readers = [
        f"+attribute_readers.{name}.phantom.{key}={value}"
        for name in ("sex", "age_band", "projection")
        for key, value in (("n_per_class", READER_N), ("image_size", SIZE))
    ]
    return [
        "source=phantom",
        "data=folder",
        f"data.root={data_root}",
        *reference_overrides(reference),
        f"paths.data_dir={audit_data / 'phantom_data'}",  # the readers' films, shared by the tests
        f"paths.cache_dir={tmp / 'cache'}",
        f"out_dir={tmp / 'audit'}",
        f"image_size={AUDIT_SIZE}",
        "contamination.enabled=false",
        "artifacts.enabled=false",
        "label_audit.n_resamples=0",
        "distance.n_resamples=50",
        "+auditor.phantom.n_per_class=40",
        "workers=1",
        "num_threads=2",
        *readers,
    ]


# realism at settings small enough for seconds: the raw set and the set cut by 0.3
REALISM = [
    "realism.crop_fractions=[0.0,0.3]",
    "realism.n_resamples=200",
    "realism.cnn.image_size=32",
    "realism.cnn.epochs=2",
]


@pytest.mark.heavy
@pytest.mark.slow
def test_one_audit_command_prints_confusion_tables_distances_in_two_spaces_and_realism_by_crop(
    swapped_set, reference_set, audit_data, tmp_path
):
    """The issue's one command: attribute confusion tables (a planted projection swap flagged), distances in
    at least two feature spaces with PRDC, realism AUROCs with CIs for the raw and the cropped set."""
    overrides = attribute_overrides(swapped_set, reference_set, tmp_path, audit_data)
    # every part runs: minutes on a busy machine
    result = run_cli("cxrsyn.audit", *overrides, *REALISM, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    attributes = audit["attributes"]
    assert [(item["attribute"], item["value"]) for item in attributes["flagged"]] == [
        ("projection", "AP supine")
    ]
    cell = next(c for c in attributes["by_attribute"]["projection"]["cells"] if c["value"] == "AP supine")
    assert cell["read_as"].get("PA", 0) > 0.8 * cell["n"] and cell["p_adjusted"] < 0.05
    assert attributes["by_attribute"]["projection"]["validation"]["recall_by_class"]["AP"] >= 0.7
    # the printed summary: each attribute's confusion table and the flagged cell
    assert "attribute fidelity: projection: agreement" in result.stdout
    assert "  asked \\ read: AP | PA" in result.stdout
    assert "1 prompt cell(s)" in result.stdout and "projection='AP supine'" in result.stdout
    markdown = (tmp_path / "audit" / "audit.md").read_text()
    assert "## Attribute fidelity" in markdown and "| projection | AP supine |" in markdown

    # distances: the auditor's space and the random ResNet's, with KID CIs and PRDC; the rest skipped
    spaces = audit["distance"]["spaces"]
    available = [name for name, space in spaces.items() if space["available"]]
    assert available == ["auditor", "random_resnet"]
    for name in available:
        entry = spaces[name]["by_reference"]["phantom_real"]
        assert entry["kid"] is not None and entry["kid_ci"][0] <= entry["kid_ci"][1]
        assert (
            all(0 <= entry[key] <= 1 for key in ("precision", "recall", "coverage")) and entry["density"] >= 0
        )
    for name in ("xrv_densenet", "inception", "raddino"):
        assert not spaces[name]["available"] and "\n" not in spaces[name]["skipped"]
    assert "distance in random_resnet to phantom_real: KID" in result.stdout
    assert "distance in inception: skipped" in result.stdout
    assert "| inception | `-` | skipped:" in markdown

    # realism: both detectors, raw and cut by 0.3, each AUROC with its interval, printed and in audit.json
    realism = audit["realism"]["phantom_real"]
    for detector in ("cnn", "statistics"):
        entry = realism[detector]
        assert entry["auroc"] is not None and "bootstrap" in entry["method"]
        (raw, cut) = entry["by_crop"]
        assert (raw["crop_fraction"], cut["crop_fraction"]) == (0.0, 0.3)
        for item in (raw, cut):
            assert item["auroc_ci"][0] <= item["auroc"] <= item["auroc_ci"][1]
        printed = (
            f"realism vs phantom_real ({detector}): AUROC {raw['auroc']:.3f} "
            f"({raw['auroc_ci'][0]:.3f}-{raw['auroc_ci'][1]:.3f}) at crop 0"
        )
        assert printed in result.stdout
        assert (
            f"-> {cut['auroc']:.3f} ({cut['auroc_ci'][0]:.3f}-{cut['auroc_ci'][1]:.3f}) after cropping 0.3"
            in (result.stdout)
        )
    assert realism["cnn"]["saliency_share"]["bottom_band"] is not None
    assert "## Realism" in markdown


@pytest.mark.slow
def test_a_faithful_set_flags_no_attribute(clean_set, reference_set, audit_data, tmp_path):
    from cxrsyn.auditing.run import audit

    overrides = attribute_overrides(clean_set, reference_set, tmp_path, audit_data)
    cfg = compose_config("audit", [*overrides, "realism.enabled=false"])
    result = audit(cfg)["attributes"]
    assert result["flagged"] == [] and result["n_cells_tested"] >= 4
    assert {"sex", "age_band", "projection", "class"} <= set(result["by_attribute"])
    projection = result["by_attribute"]["projection"]
    assert projection["agreement"] > 0.8 and projection["kappa_ci"][0] > 0.5
