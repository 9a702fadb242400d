"""The audit end to end on phantom data with planted problems, and on a clean phantom set."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.auditing.conftest import AUDIT_SIZE, reference_overrides
from tests.conftest import compose_config, run_cli


def audit_overrides(data_root: Path, reference: Path, auditor: Path, out_dir: Path, cache: Path) -> list[str]:
    return [
        "data=folder",
        f"data.root={data_root}",
        *reference_overrides(reference),
        "auditor._target_=cxrsyn.auditing.models.PixelAuditor",
        f"auditor.weights_path={auditor}",
        f"out_dir={out_dir}",
        f"paths.cache_dir={cache}",
        f"image_size={AUDIT_SIZE}",
        "contamination.calibration_n=80",
        "label_audit.n_resamples=200",
        "distance.n_resamples=50",
        "artifacts.n_permutations=400",
        "realism.enabled=false",  # its own tests (test_realism.py); on in the planted audit, at tiny settings
        "workers=1",
        "num_threads=2",
    ]


TINY_REALISM = [
    "realism.enabled=true",
    "realism.crop_fractions=[0.0,0.3]",
    "realism.folds=3",
    "realism.n_resamples=200",
    "realism.cnn.image_size=32",
    "realism.cnn.epochs=2",
]


@pytest.mark.heavy
@pytest.mark.slow
def test_audit_flags_exactly_the_planted_problems(planted_set, reference_set, planted_auditor, tmp_path):
    out = tmp_path / "audit"
    args = audit_overrides(planted_set["root"], reference_set, planted_auditor, out, tmp_path / "cache")
    result = run_cli("cxrsyn.audit", *args, *TINY_REALISM, "logger=wandb", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    audit = json.loads((out / "audit.json").read_text())

    # contamination: exactly the four copies, each matched to the film it was made from
    flagged = audit["contamination"]["flagged"]
    assert {item["path"] for item in flagged} == set(planted_set["copies"])
    for item in flagged:
        assert item["match_path"] == planted_set["copies"][item["path"]]
        assert item["test_set"] == "phantom_real"
        assert item["value"] > item["threshold"]
    pixels = audit["contamination"]["by_reference"]["phantom_real"]["pixels"]
    assert pixels["n_flagged"] == 4
    assert "false-positive rate 1/81" in pixels["rule"] and "other patients" in pixels["rule"]
    assert pixels["expected_false_flags"] == pytest.approx(
        len(pd.read_csv(planted_set["root"] / "manifest.csv")) / 81
    )
    excluded = [line for line in (out / "exclude.txt").read_text().splitlines() if not line.startswith("#")]
    assert sorted(excluded) == sorted(planted_set["copies"])

    # label fidelity: the flipped images come first; AUROC equals scikit-learn's on the written scores
    ranked = pd.read_csv(out / "label_audit.csv")
    assert set(ranked["path"].iloc[:4]) == set(planted_set["flipped"])
    labels = audit["label_audit"]
    assert {item["path"] for item in labels["contradicting"][:4]} == set(planted_set["flipped"])
    expected = roc_auc_score(ranked["label"], ranked["Pneumonia"])
    assert labels["auroc_vs_prompt_labels"]["Pneumonia"]["auroc"] == pytest.approx(expected, abs=1e-12)
    low, high = labels["auroc_vs_prompt_labels"]["Pneumonia"]["auroc_ci"]
    assert low <= expected <= high
    # the yardstick: the same auditor on the reference set against its real labels, beside it in audit.md
    yardstick = labels["on_references"]["phantom_real"]
    assert yardstick["n"] == 80 and 0 <= yardstick["contradiction_rate"] <= 1
    assert yardstick["auroc_vs_labels"]["Pneumonia"]["auroc_ci"] is not None
    assert "| phantom_real | 80 |" in (out / "audit.md").read_text()

    # artifacts: the class-linked label bar is found, inside the bottom band (and its corner)
    artifacts = audit["artifacts"]
    assert "bottom_band" in artifacts["flagged"]
    assert "bottom_right" in artifacts["flagged"]
    assert artifacts["strongest_region"]["inside_bottom_band"]
    x0, y0, x1, y1 = artifacts["strongest_region"]["box"]
    assert y0 >= 0.7 and x0 >= 0.5  # the bar sits at the bottom right (rows 0.89-0.95, columns 0.73-0.95)

    # distance: KID for the whole set and each class with a bootstrap CI; FID of the whole set
    kid = audit["distance"]["by_reference"]["phantom_real"]
    assert kid["all"]["fid"] > 0
    for subset in ("all", "pneumonia", "normal"):
        assert kid[subset]["kid"] is not None
        assert kid[subset]["kid_ci"][0] <= kid[subset]["kid_ci"][1]
    assert audit["distance"]["diversity"]["mean_pairwise_cosine"] is not None

    # realism: both detectors at both crops; the AUROC is scikit-learn's on the written out-of-fold scores;
    # generator-like films differ from real-like ones everywhere (contrast, noise): the statistics tell them apart
    realism = audit["realism"]["phantom_real"]
    scores = pd.read_csv(out / realism["scores"])
    assert len(scores) == realism["n_audited"] + realism["n_reference"]
    assert not scores[["set", "path"]].duplicated().any()
    synthetic = (scores["set"] == "audited").astype(int)
    for detector in ("cnn", "statistics"):
        entry = realism[detector]
        assert [item["crop_fraction"] for item in entry["by_crop"]] == [0.0, 0.3]
        for item in entry["by_crop"]:
            column = scores[f"{detector}_{item['crop_fraction']:g}"]
            assert item["auroc"] == pytest.approx(roc_auc_score(synthetic, column), abs=1e-12)
            assert item["auroc_ci"][0] <= item["auroc"] <= item["auroc_ci"][1]
        assert entry["auroc"] == entry["by_crop"][0]["auroc"] and "sqrt(2)" in entry["method"]
    assert realism["statistics"]["auroc_ci"][0] > 0.5 and realism["statistics"]["distinguishable"]
    assert set(realism["cnn"]["saliency_share"]["area"]) == {
        "bottom_band",
        "top_band",
        "borders",
        "lungs",
        "other",
    }
    assert realism["cnn"]["by_crop"][1]["saliency_share"]["bottom_band"] == 0.0  # the crop removed that band
    assert "## Realism" in (out / "audit.md").read_text() and "realism vs phantom_real (cnn)" in result.stdout

    # outputs, summary and W&B (offline)
    for name in (
        "audit.md",
        "figures/realism_phantom_real.png",
        "figures/artifacts.png",
        "figures/label_audit.png",
        "figures/contamination_phantom_real.png",
    ):
        assert (out / name).is_file(), name
    assert "contamination: 4 audited image(s) flagged" in result.stdout
    assert "Auditing" not in result.stderr
    assert list(out.glob("wandb/offline-run-*")), "no offline W&B run was written"


def test_clean_images_of_other_patients_are_flagged_at_the_stated_rate(
    other_real_like, reference_set, clean_auditor, tmp_path
):
    """End to end: 80 clean real-like films of other patients against the 80-film reference set. 80
    calibration images cannot give 0.001, so the rule says so and uses their maximum (rate 1/81 per image and
    method); the flags of each method stay within the rule's predictive law, Beta-binomial(80, 1, 80) (the
    many-image check of the rate is tests/auditing/test_thresholds.py)."""
    from scipy.stats import betabinom

    from cxrsyn.auditing.run import audit

    out = tmp_path / "audit"
    overrides = audit_overrides(other_real_like, reference_set, clean_auditor, out, tmp_path / "cache")
    overrides += ["label_audit.enabled=false", "distance.enabled=false", "artifacts.enabled=false"]
    result = audit(compose_config("audit", overrides))["contamination"]
    methods = result["by_reference"]["phantom_real"]
    for method, item in methods.items():
        calibration = item["calibration"]
        assert calibration["k"] == 1 and calibration["achieved_rate"] == pytest.approx(
            1 / (calibration["n"] + 1)
        )
        assert "cannot calibrate a false-positive rate of 0.001 (that needs 999)" in calibration["note"]
        assert item["expected_false_flags"] == pytest.approx(80 * calibration["achieved_rate"])
        assert item["n_flagged"] <= betabinom.ppf(0.999, 80, 1, calibration["n"]), (method, item["n_flagged"])
    assert result["expected_false_flags"] == pytest.approx(
        sum(m["expected_false_flags"] for m in methods.values())
    )
    assert len(result["notes"]) == 2 and "cannot calibrate" in (out / "audit.md").read_text()

    # a second audit against the same reference set reads the calibration values from the cache
    again = overrides[:]
    again[again.index(f"out_dir={out}")] = f"out_dir={tmp_path / 'again'}"
    repeated = audit(compose_config("audit", again))["contamination"]["by_reference"]["phantom_real"]
    for method, item in methods.items():
        assert item["calibration"]["cache"]["built"] is True
        assert repeated[method]["calibration"]["cache"] == {**item["calibration"]["cache"], "built": False}
        assert repeated[method]["threshold"] == item["threshold"]


def test_clean_set_flags_nothing(clean_set, reference_set, clean_auditor, tmp_path):
    from cxrsyn.auditing.run import audit

    out = tmp_path / "audit"
    cfg = compose_config(
        "audit", audit_overrides(clean_set, reference_set, clean_auditor, out, tmp_path / "cache")
    )
    result = audit(cfg)
    assert result["contamination"]["flagged"] == []
    assert result["artifacts"]["flagged"] == []
    assert result["label_audit"]["n_contradicting"] == 0
    assert (out / "exclude.txt").read_text().count("\n") == 2  # the two comment lines, no path
