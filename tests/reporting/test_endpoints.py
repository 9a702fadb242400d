"""What the report says a study claims: steps per arm and what the study held equal, the primary and secondary
comparisons with their Holm families, and the difference between two test sets for the same models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import write_json
from cxrsyn.evaluation.outputs import test_set_metrics as score_table
from cxrsyn.evaluation.outputs import write_predictions
from cxrsyn.reporting.endpoints import primary_endpoint, study_set_comparisons
from cxrsyn.reporting.runs import find_runs
from cxrsyn.reporting.write import write_report
from tests.reporting.test_report import make_run


def set_experiment(folder, **settings) -> None:
    """Add ``settings`` to the experiment block of every run's config.yaml under ``folder``."""
    for path in folder.rglob("config.yaml"):
        config = yaml.safe_load(path.read_text())
        config["experiment"].update(settings)
        path.write_text(yaml.safe_dump(config))


def set_training(run_dir, steps: int, pretrain_steps: int | None = None) -> None:
    """Give a run's metrics.json the ``training`` record (and a pretraining stage's) that training writes."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["training"] = {"held_equal": "steps", "max_steps": steps, "steps": steps, "epochs": 2.5}
    if pretrain_steps is not None:
        metrics["run"]["init"] = {"pretrain": {"training": {"steps": pretrain_steps}}}
    write_json(run_dir / "metrics.json", metrics)


def test_the_report_shows_the_steps_of_every_arm_and_what_the_study_held_equal(tmp_path):
    """A scaling study's arms: the per-arm table and report.json give each arm's steps; a study that holds
    steps equal and whose arms took different numbers of them is told so, in bold."""
    job = 0
    for count in (25, 50):
        for seed in (0, 1):
            make_run(
                tmp_path / str(job),
                "synthetic_cropped",
                seed,
                1.0,
                ("rsna",),
                extra=[f"data.max_per_class={count}"],
            )
            set_training(tmp_path / str(job), 80)
            job += 1
    set_experiment(tmp_path, held_equal="steps", primary={"test_set": "rsna", "metric": "auroc"})
    report = write_report(tmp_path, n_resamples=50, figures=False)
    assert report["training"]["held_equal"] == "steps" and report["training"]["equal_steps"] is True
    assert {arm: value["steps"] for arm, value in report["training"]["arms"].items()} == {
        "data.max_per_class=25": 80,
        "data.max_per_class=50": 80,
    }
    assert {row["steps"] for row in report["summary"]} == {80}
    markdown = (tmp_path / "results.md").read_text()
    assert "| arm | rsna AUROC | rsna AUPR | rsna n | steps |" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| data.max_per_class=25 | "))
    assert row.endswith(" | 80 |")
    assert "every arm took the same number of optimiser steps (experiment.held_equal: steps)" in markdown
    assert pd.read_csv(tmp_path / "results.csv")["steps"].tolist() == [80] * 4
    # an epoch budget: the smaller arm took fewer steps
    set_training(tmp_path / "0", 20)
    set_training(tmp_path / "1", 20)
    report = write_report(tmp_path, n_resamples=50, figures=False)
    assert report["training"]["equal_steps"] is False
    markdown = (tmp_path / "results.md").read_text()
    assert "**The arms took different numbers of optimiser steps** although the study holds steps equal" in (
        markdown
    )
    row = next(line for line in markdown.splitlines() if line.startswith("| data.max_per_class=25 | "))
    assert row.endswith(" | 20 |")


def test_a_pretrained_arm_shows_its_pretraining_steps_first(tmp_path):
    for job, (enabled, pretrain) in enumerate((("true", 80), ("false", None))):
        make_run(tmp_path / str(job), "rsna_train", 0, 1.0, ("rsna",), extra=[f"pretrain.enabled={enabled}"])
        set_training(tmp_path / str(job), 80, pretrain)
    write_report(tmp_path, n_resamples=50, figures=False)
    markdown = (tmp_path / "results.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| pretrain.enabled=")]
    assert rows[0].endswith(" | 80 + 80 |") and rows[1].endswith(" | 80 |")
    assert "the pretraining is that arm's treatment" in markdown


def test_primary_and_secondary_comparisons_are_labelled_with_their_holm_families(tmp_path):
    """Three arms, two test sets, AUROC on rsna primary: the two comparisons on rsna are the primary family
    (their AUROC p values Holm-adjusted together); kermany's and every AUPR comparison are secondary, each
    family adjusted apart."""
    job = 0
    for seed in (0, 1):
        for data, signal in (("synthetic_raw", 0.2), ("synthetic_cropped", 1.5), ("roentgen", 0.8)):
            make_run(tmp_path / str(job), data, seed, signal)
            job += 1
    set_experiment(
        tmp_path,
        primary={"test_set": "rsna", "metric": "auroc"},
        compare=[["data=synthetic_cropped", "data=synthetic_raw"], ["data=roentgen", "data=synthetic_raw"]],
    )
    report = write_report(tmp_path, n_resamples=100, figures=False)
    roles = {(v["arm_a"], v["test_set"]): v["role"] for v in report["study_comparisons"]}
    for arm in ("data=synthetic_cropped", "data=roentgen"):
        assert roles[(arm, "rsna")] == {"auroc": "primary", "aupr": "secondary"}
        assert roles[(arm, "kermany")] == {"auroc": "secondary", "aupr": "secondary"}
    families = {
        f["family"]: (f["role"], f["comparisons"], f["adjustment"]) for f in report["endpoints"]["families"]
    }
    assert families == {
        "ΔAUROC between arms on rsna": ("primary", 2, "Holm"),
        "ΔAUPR between arms on rsna": ("secondary", 2, "Holm"),
        "ΔAUROC between arms on kermany": ("secondary", 2, "Holm"),
        "ΔAUPR between arms on kermany": ("secondary", 2, "Holm"),
    }
    assert report["endpoints"]["families"][0]["role"] == "primary"  # listed first
    assert report["endpoints"]["primary"] == {"test_set": "rsna", "metric": "auroc", "comparison": "arms"}
    markdown = (tmp_path / "results.md").read_text()
    assert "**Primary endpoint:** ΔAUROC between arms on rsna (experiment.primary). Every other" in markdown
    assert "ΔAUROC between arms on rsna: 2 (primary, Holm-adjusted together)" in markdown
    primary_lines = [line for line in markdown.splitlines() if line.startswith("- **primary**")]
    assert len(primary_lines) == 2 and all(" on rsna (" in line for line in primary_lines)
    table = pd.read_csv(tmp_path / "study_comparisons.csv")
    assert set(table["role_auroc"]) == {"primary", "secondary"} and set(table["role_aupr"]) == {"secondary"}


def test_a_malformed_primary_endpoint_is_one_line():
    with pytest.raises(CxrsynError, match=r"^experiment.primary=\{'test_set': 'rsna'\}: give"):
        primary_endpoint({"test_set": "rsna"})
    with pytest.raises(
        CxrsynError, match="^experiment.primary.comparison='seeds': use one of arms, test_sets"
    ):
        primary_endpoint({"test_set": "rsna", "metric": "auroc", "comparison": "seeds"})
    assert primary_endpoint(None) is None


def selection_runs(folder, n_pos=80, n_normal=120, n_other=160):
    """rsna_selection in miniature: every run scores the same images, tested as ``rsna`` (positives and normal
    negatives) and as ``rsna_target`` (also the other negatives, which the models score higher: the full task
    is harder). Two arms, three seeds."""
    groups = np.repeat([0, 1, 2], [n_pos, n_normal, n_other])
    paths = [f"images/{i:04d}.dcm" for i in range(groups.size)]
    job = 0
    for data, signal in (("synthetic_cropped", 1.5), ("synthetic_raw", 0.8)):
        for seed in (0, 1, 2):
            run_dir = folder / str(job)
            make_run(run_dir, data, seed, signal, test_sets=("rsna",), experiment="rsna_selection")
            rng = np.random.default_rng(100 + job)
            latent = np.select([groups == 0, groups == 2], [signal, 0.6 * signal], 0.0)
            probs = 1 / (1 + np.exp(-(latent + rng.normal(size=groups.size))))
            table = pd.DataFrame(
                {"path": paths, "label": (groups == 0).astype(int), "prob": probs, "patient": paths}
            )
            metrics = json.loads((run_dir / "metrics.json").read_text())
            for name, rows in (("rsna", table[groups != 2]), ("rsna_target", table)):
                path = write_predictions(run_dir, name, rows.reset_index(drop=True))
                metrics["test_sets"][name] = {
                    **score_table(rows, {"n_resamples": 50, "seed": 0}),
                    "predictions": str(path.relative_to(run_dir)),
                }
            write_json(run_dir / "metrics.json", metrics)
            job += 1
    set_experiment(
        folder,
        primary={"test_set": "rsna_target", "metric": "auroc", "comparison": "test_sets"},
        compare_test_sets=[["rsna", "rsna_target"]],
    )
    return groups


def test_rsna_selection_reports_the_paired_difference_between_its_test_sets(tmp_path):
    """Per arm, AUROC on the paper's selection minus on the full task for the same models: the mean over seeds
    of each run's two AUROCs (scikit-learn on its predictions), with a patient-clustered CI over the patients
    both sets share; it is the study's primary endpoint, the arm comparisons secondary."""
    selection_runs(tmp_path)
    report = write_report(tmp_path, n_resamples=100, figures=False)
    found = {v["arm"]: v for v in report["test_set_comparisons"]}
    assert set(found) == {"data=synthetic_cropped", "data=synthetic_raw"}
    for arm, verdict in found.items():
        runs = sorted((p.parent for p in tmp_path.glob("*/metrics.json")), key=lambda p: int(p.name))
        deltas = []
        for run_dir in runs:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            if f"data={metrics['run']['train_data']}" != arm:
                continue
            a = pd.read_csv(run_dir / "predictions" / "rsna.csv")
            b = pd.read_csv(run_dir / "predictions" / "rsna_target.csv")
            deltas.append(roc_auc_score(a["label"], a["prob"]) - roc_auc_score(b["label"], b["prob"]))
        assert verdict["n_seeds"] == 3 and verdict["delta_auroc"] == pytest.approx(np.mean(deltas), abs=1e-12)
        assert verdict["per_seed_delta_auroc"] == pytest.approx(deltas, abs=1e-12)
        assert (verdict["n_a"], verdict["n_b"], verdict["n_patients_shared"]) == (200, 360, 200)
        assert verdict["delta_auroc_ci"][0] < verdict["delta_auroc"] < verdict["delta_auroc_ci"][1]
        assert verdict["delta_auroc"] > 0 and verdict["df"] == 2  # the planted gap; t with S - 1 df
        assert verdict["role"] == "primary" and verdict["family"] == "ΔAUROC rsna - rsna_target, same models"
        assert verdict["adjustment"] == "Holm over the 2 arms" and verdict["p_adjusted"] >= verdict["p"]
    for v in report["study_comparisons"]:
        assert v["role"] == {"auroc": "secondary", "aupr": "secondary"}
    markdown = (tmp_path / "results.md").read_text()
    assert "## Between test sets, same models (a - b)" in markdown
    assert "**Primary endpoint:** ΔAUROC rsna - rsna_target, same models (experiment.primary)." in markdown
    assert (
        "- primary: data=synthetic_cropped: AUROC on rsna - on rsna_target (3 seed(s); 200 and 360 images"
        in (markdown)
    )
    assert markdown.index("## Between test sets") < markdown.index("## Results by arm")
    assert len(pd.read_csv(tmp_path / "test_set_comparisons.csv")) == 2


def test_test_sets_compared_need_the_same_images_in_every_seed(tmp_path):
    selection_runs(tmp_path)
    table = pd.read_csv(tmp_path / "1" / "predictions" / "rsna_target.csv")
    table.loc[0, "path"] = "elsewhere.dcm"
    table.to_csv(tmp_path / "1" / "predictions" / "rsna_target.csv", index=False)
    study = find_runs(tmp_path)
    with pytest.raises(
        CxrsynError, match="^test set 'rsna_target' holds different images in different seeds"
    ):
        study_set_comparisons(study, [["rsna", "rsna_target"]])
