"""The study report: arms from overrides, mean and sd over seeds, paired tests, figures, paper rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from cxrsyn.core.fileio import write_json
from cxrsyn.evaluation.metrics import pr_curve
from cxrsyn.evaluation.metrics import roc_curve as our_roc_curve
from cxrsyn.evaluation.outputs import test_set_metrics as score_table
from cxrsyn.evaluation.outputs import write_predictions
from cxrsyn.reporting.paper import PAPER_FILE
from cxrsyn.reporting.runs import find_runs
from cxrsyn.reporting.write import write_report
from tests.conftest import run_cli

N = 300


def make_run(folder, data, seed, signal, test_sets=("rsna", "kermany"), experiment="crop_ablation", extra=()):
    """A run folder as training writes it: predictions scored with ``signal`` (0 = chance)."""
    rng = np.random.default_rng(seed * 100 + int(signal * 10))
    metrics = {"test_sets": {}, "run": {}}
    for name in test_sets:
        labels = np.r_[np.ones(N // 2), np.zeros(N // 2)].astype(int)
        probs = 1 / (1 + np.exp(-(signal * (2 * labels - 1) + rng.normal(size=N))))
        table = pd.DataFrame({"path": [f"{name}/{i}.png" for i in range(N)], "label": labels, "prob": probs})
        table["sex"] = np.where(np.arange(N) % 2, "F", "M")
        path = write_predictions(folder, name, table)
        metrics["test_sets"][name] = {
            **score_table(table, {"n_resamples": 200, "seed": 0}),
            "predictions": str(path.relative_to(folder)),
        }
    metrics["run"] = {
        "experiment": experiment,
        "source": "phantom",
        "seed": seed,
        "train_data": data,
        "overrides": [f"data={data}", f"seed={seed}", "+experiment=crop_ablation", "source=phantom", *extra],
        "swept": [f"data={data}", f"seed={seed}"],
    }
    write_json(folder / "metrics.json", metrics)
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    config = {
        "experiment": {"name": experiment, "compare": [["data=synthetic_cropped", "data=synthetic_raw"]]}
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return metrics


@pytest.fixture
def sweep(tmp_path):
    """Two arms x two seeds: the cropped arm has a strong signal, the raw arm a weak one; job 4 crashed."""
    for job, (data, seed, signal) in enumerate(
        [
            ("synthetic_raw", 0, 0.2),
            ("synthetic_cropped", 0, 1.5),
            ("synthetic_raw", 1, 0.2),
            ("synthetic_cropped", 1, 1.5),
        ]
    ):
        make_run(tmp_path / str(job), data, seed, signal)
    (tmp_path / "4" / ".hydra").mkdir(parents=True)
    return tmp_path


def test_curves_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400), 2)  # ties
    fpr, tpr = our_roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    precision, recall = pr_curve(labels, scores)
    sk_precision, sk_recall, _ = precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision, sk_precision[:-1][::-1], atol=1e-12)
    np.testing.assert_allclose(recall, sk_recall[:-1][::-1], atol=1e-12)
    assert float(np.sum(np.diff(np.r_[0, recall]) * precision)) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_arms_are_the_overrides_that_differ_and_unfinished_jobs_are_listed(sweep):
    study = find_runs(sweep)
    assert study.arms == ["data=synthetic_raw", "data=synthetic_cropped"]
    assert [run.seed for run in study.of_arm("data=synthetic_cropped")] == [0, 1]
    assert study.unfinished == ["4"]


def test_report_tables_comparisons_and_figures(sweep, tmp_path):
    report = write_report(sweep, n_resamples=300)
    per_run = pd.read_csv(sweep / "results.csv")
    assert len(per_run) == 8 and set(per_run["test_set"]) == {"rsna", "kermany"}
    summary = {(row["arm"], row["test_set"]): row for row in report["summary"]}
    cropped = summary[("data=synthetic_cropped", "rsna")]
    aurocs = per_run[(per_run["arm"] == "data=synthetic_cropped") & (per_run["test_set"] == "rsna")]["auroc"]
    assert cropped["auroc_mean"] == pytest.approx(aurocs.mean()) and cropped["auroc_sd"] == pytest.approx(
        aurocs.std()
    )
    comparisons = pd.read_csv(sweep / "comparisons.csv")
    assert len(comparisons) == 4  # one pair (from experiment.compare) x 2 test sets x 2 seeds
    assert (comparisons["arm_a"] == "data=synthetic_cropped").all()
    assert (comparisons["auroc_diff"] > 0).all() and (comparisons["delong_p"] < 0.05).all()
    assert (comparisons["boot_auroc_diff_lo"] > 0).all()
    markdown = (sweep / "results.md").read_text()
    assert (
        "PHANTOM RUN" in markdown
        and "| paper: Nano Banana, bottom 30% cropped | 0.923 [0.919, 0.927]" in markdown
    )
    assert "Unfinished job folders (no metrics.json, left out): 4" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| data=synthetic_cropped | "))
    assert f"{cropped['auroc_mean']:.3f} ± {cropped['auroc_sd']:.3f}" in row
    for name in ("roc_rsna", "pr_rsna", "roc_kermany", "pr_kermany"):
        assert (sweep / f"{name}.png").stat().st_size > 5000
    assert json.loads((sweep / "report.json").read_text())["unfinished"] == ["4"]


def test_paired_test_needs_the_same_images(tmp_path):
    make_run(tmp_path / "0", "synthetic_raw", 0, 0.5)
    make_run(tmp_path / "1", "synthetic_cropped", 0, 0.5)
    table = pd.read_csv(tmp_path / "1" / "predictions" / "rsna.csv")
    table.loc[0, "path"] = "elsewhere.png"
    table.to_csv(tmp_path / "1" / "predictions" / "rsna.csv", index=False)
    result = run_cli("cxrsyn.report", str(tmp_path), "--no-figures")
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: test set 'rsna' differs between") and result.stderr.count("\n") == 1
    )


def test_no_runs_is_one_line(tmp_path):
    result = run_cli("cxrsyn.report", str(tmp_path))
    assert result.returncode == 2 and "no training run under" in result.stderr
    assert result.stderr.count("\n") == 1


def test_crop_sweep_arms_get_the_paper_rows_they_match(tmp_path):
    for job, crop in enumerate((0.0, 0.3)):
        make_run(tmp_path / str(job), "synthetic_raw", 0, 1.0, extra=[f"data.crop_bottom_fraction={crop}"])
    write_report(tmp_path, n_resamples=100, figures=False)
    markdown = (tmp_path / "results.md").read_text()
    assert "| data.crop_bottom_fraction=0.3 |" in markdown
    assert "| paper: Nano Banana, raw | 0.853 |" in markdown
    assert "| paper: Nano Banana, bottom 30% cropped | 0.923 [0.919, 0.927] |" in markdown


STUDY_KEYS = {
    "arm_a",
    "arm_b",
    "test_set",
    "n_seeds",
    "delta_auroc",
    "delta_auroc_ci",
    "delta_aupr",
    "delta_aupr_ci",
    "p",
    "p_adjusted",
    "df",
    "se_auroc",
    "variance_seed_auroc",
    "variance_patients_auroc",
    "underpowered",
    "method",
}


def test_study_comparisons_lead_the_report_and_warn_below_five_seeds(sweep):
    report = write_report(sweep, n_resamples=300, figures=False)
    verdicts = report["study_comparisons"]
    assert [(v["arm_a"], v["arm_b"], v["test_set"]) for v in verdicts] == [
        ("data=synthetic_cropped", "data=synthetic_raw", "rsna"),
        ("data=synthetic_cropped", "data=synthetic_raw", "kermany"),
    ]
    per_run = pd.read_csv(sweep / "results.csv")
    for verdict in verdicts:
        assert set(verdict) >= STUDY_KEYS
        assert verdict["n_seeds"] == 2 and verdict["df"] == 1 and verdict["underpowered"]
        assert "Student's t with 1 df" in verdict["method"]
        low, high = verdict["delta_auroc_ci"]
        assert low < verdict["delta_auroc"] < high and verdict["delta_auroc"] > 0.2  # the planted gap
        assert verdict["delta_aupr_ci"][0] < verdict["delta_aupr"] < verdict["delta_aupr_ci"][1]
        assert verdict["p_adjusted"] == verdict["p"]  # one comparison per test set
        assert verdict["variance_seed_auroc"] + verdict["variance_patients_auroc"] == pytest.approx(
            verdict["se_auroc"] ** 2
        )
        # the estimate is the mean over seeds of the per-run AUROC differences written in results.csv
        rows = per_run[per_run["test_set"] == verdict["test_set"]]
        by_arm = rows.groupby("arm")["auroc"].mean()
        assert verdict["delta_auroc"] == pytest.approx(
            by_arm["data=synthetic_cropped"] - by_arm["data=synthetic_raw"], abs=1e-9
        )
    markdown = (sweep / "results.md").read_text()
    assert markdown.index("## Study-level comparisons") < markdown.index("## Results by arm")
    assert "significantly better (DeLong" not in markdown  # counting significant seeds is not a test
    assert markdown.count("underpowered; the interval is wide by construction") == 3  # each line + summary
    assert "2 of 2 comparison(s) rest on 2 seed(s)" in markdown and "variance: seeds" in markdown
    assert json.loads((sweep / "report.json").read_text())["study_comparisons"] == json.loads(
        json.dumps(verdicts)
    )
    table = pd.read_csv(sweep / "study_comparisons.csv")
    assert len(table) == 2 and {"variance_seed_auroc", "variance_patients_auroc", "df"} <= set(table.columns)


def test_five_seeds_find_the_planted_gap_without_the_warning(tmp_path):
    for seed in range(5):
        for job, (data, signal) in enumerate([("synthetic_raw", 0.2), ("synthetic_cropped", 1.5)]):
            make_run(tmp_path / f"{seed}_{job}", data, seed, signal, test_sets=("rsna",))
    (verdict,) = write_report(tmp_path, n_resamples=200, figures=False)["study_comparisons"]
    assert verdict["n_seeds"] == 5 and not verdict["underpowered"]
    assert verdict["delta_auroc_ci"][0] > 0 and verdict["p"] < 0.05
    assert "underpowered" not in (tmp_path / "results.md").read_text()


def test_one_seed_gives_no_verdict_about_the_recipe(tmp_path):
    for job, (data, signal) in enumerate([("synthetic_raw", 0.2), ("synthetic_cropped", 1.5)]):
        make_run(tmp_path / str(job), data, 0, signal, test_sets=("rsna",))
    (verdict,) = write_report(tmp_path, n_resamples=200, figures=False)["study_comparisons"]
    assert verdict["delta_auroc_ci"] is None and verdict["p"] is None and verdict["p_adjusted"] is None
    assert (
        0 < verdict["conditional_auroc_ci"][0] < verdict["delta_auroc"] < verdict["conditional_auroc_ci"][1]
    )
    assert verdict["adjustment"] == "none (one seed: no test)"
    markdown = (tmp_path / "results.md").read_text()
    assert "no verdict about the recipe (1 seed: no seed variance is estimable)" in markdown
    assert "conditional on this one trained model per arm" in markdown
    table = pd.read_csv(tmp_path / "study_comparisons.csv")
    assert table["delta_auroc_lo"].isna().all() and table["p"].isna().all()


def test_several_comparisons_on_a_test_set_are_holm_adjusted(tmp_path):
    for job, (data, signal) in enumerate(
        [("synthetic_raw", 0.2), ("synthetic_cropped", 1.5), ("roentgen", 0.4)] * 2
    ):
        seed = job // 3
        make_run(tmp_path / str(job), data, seed, signal, test_sets=("rsna",), experiment="three_arms")
        (tmp_path / str(job) / "config.yaml").write_text(
            yaml.safe_dump({"experiment": {"name": "three_arms"}})
        )
    verdicts = write_report(tmp_path, n_resamples=200, figures=False)["study_comparisons"]
    assert len(verdicts) == 3  # every pair of three arms
    p = [v["p"] for v in verdicts]
    order = np.argsort(p)
    expected = np.minimum(1, np.maximum.accumulate([(3 - i) * p[j] for i, j in enumerate(order)]))
    for rank, j in enumerate(order):
        assert verdicts[j]["p_adjusted"] == pytest.approx(expected[rank])
        assert verdicts[j]["adjustment"] == "Holm over the 3 comparisons on rsna"


def test_patient_clusters_widen_the_per_seed_and_study_intervals(tmp_path):
    """The same predictions, once with one patient per image and once with the images of a patient as
    near copies of each other: intervals widen when patients, not images, are resampled."""
    widths = {}
    for clustered in (False, True):
        folder = tmp_path / str(clustered)
        for job, (data, signal) in enumerate([("synthetic_raw", 0.5), ("synthetic_cropped", 0.9)]):
            make_run(folder / str(job), data, 0, signal, test_sets=("kermany",))
            path = folder / str(job) / "predictions" / "kermany.csv"
            table = pd.read_csv(path)
            # five copies of 60 images: patient p<i> owns rows 5i..5i+4, all carrying image 5i's score
            table["prob"] = np.repeat(table["prob"].to_numpy()[::5], 5) + np.arange(N) * 1e-9
            table["label"] = np.repeat(table["label"].to_numpy()[::5], 5)
            if clustered:
                table["patient"] = [f"p{i // 5}" for i in range(N)]
            write_predictions(folder / str(job), "kermany", table)
        verdict = write_report(folder, n_resamples=400, figures=False)["study_comparisons"][0]
        low, high = verdict["conditional_auroc_ci"]  # one seed: the interval over test patients only
        widths[clustered] = high - low
        assert verdict["n_patients"] == (60 if clustered else N)
    assert widths[True] / widths[False] == pytest.approx(np.sqrt(5), rel=0.3)


def test_a_numeric_arm_is_drawn_as_a_curve_with_study_level_bands(tmp_path):
    job = 0
    for count, signal in ((25, 0.2), (50, 0.8), (100, 1.6)):
        for seed in (0, 1):
            make_run(
                tmp_path / str(job),
                "synthetic_cropped",
                seed,
                signal,
                test_sets=("rsna",),
                extra=[f"data.max_per_class={count}"],
            )
            job += 1
    report = write_report(tmp_path, n_resamples=200)
    curves = report["curves"]
    assert [(c["value"], c["n_seeds"]) for c in curves] == [(25.0, 2), (50.0, 2), (100.0, 2)]
    assert all(c["key"] == "data.max_per_class" and c["line"] == "all" for c in curves)
    assert curves[0]["auroc"] < curves[1]["auroc"] < curves[2]["auroc"]  # the planted signal grows
    for c in curves:
        assert c["auroc_ci"][0] <= c["auroc"] <= c["auroc_ci"][1]
    assert (tmp_path / "scaling_rsna.png").stat().st_size > 5000
    assert "## Against data.max_per_class" in (tmp_path / "results.md").read_text()


def test_report_names_each_training_environment_and_warns_when_they_differ(sweep):
    from cxrsyn.core.environment import environment

    here = environment()
    elsewhere = {**here, "cpu_capability": "AVX512_TEST", "numerics": "0123456789ab"}
    for job in ("0", "1", "2", "3"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        metrics["run"]["environment"] = elsewhere if job == "3" else here
        write_json(sweep / job / "metrics.json", metrics)
    report = write_report(sweep, n_resamples=50, figures=False)
    found = {env["numerics"]: env["runs"] for env in report["provenance"]["environments"]}
    assert found == {here["numerics"]: 3, "0123456789ab": 1}
    assert [run["numerics"] for run in report["provenance"]["runs"]].count("0123456789ab") == 1
    markdown = (sweep / "results.md").read_text()
    assert f"Environment `{here['numerics']}` (3 run(s))" in markdown
    assert "Runs from more than one environment" in markdown
    # one environment: no warning
    metrics = json.loads((sweep / "3" / "metrics.json").read_text())
    metrics["run"]["environment"] = here
    write_json(sweep / "3" / "metrics.json", metrics)
    write_report(sweep, n_resamples=50, figures=False)
    assert "Runs from more than one environment" not in (sweep / "results.md").read_text()


def test_paper_rows_are_read_from_the_paper_file(tmp_path):
    paper = yaml.safe_load(PAPER_FILE.read_text())
    paper["citation"] = "Someone, arXiv 0000.00000"
    paper["arms"]["synthetic_raw"]["test_sets"]["kermany"] = {
        "n": 99,
        "auroc": 0.5,
        "aupr": 0.25,
        "aupr_ci": [0.2, 0.3],
    }
    changed = tmp_path / "paper.yaml"
    changed.write_text(yaml.safe_dump(paper))
    for job, data in enumerate(("synthetic_raw", "synthetic_cropped")):
        make_run(tmp_path / "study" / str(job), data, 0, 1.0)
    write_report(tmp_path / "study", n_resamples=50, figures=False, paper_file=changed)
    markdown = (tmp_path / "study" / "results.md").read_text()
    assert "| paper: Nano Banana, raw | 0.853 | n/r | 14863 | 0.500 | 0.250 [0.200, 0.300] | 99 |" in markdown
    assert "Paper rows: Someone, arXiv 0000.00000 (one run per arm; 95% CI in brackets)." in markdown
    write_report(tmp_path / "study", n_resamples=50, figures=False, paper_file=None)
    assert "paper:" not in (tmp_path / "study" / "results.md").read_text()


def test_a_paper_file_without_a_label_is_one_line(tmp_path):
    paper = yaml.safe_load(PAPER_FILE.read_text())
    del paper["arms"]["synthetic_raw"]["label"]
    broken = tmp_path / "paper.yaml"
    broken.write_text(yaml.safe_dump(paper))
    make_run(tmp_path / "study" / "0", "synthetic_raw", 0, 1.0)
    result = run_cli("cxrsyn.report", str(tmp_path / "study"), "--no-figures", "--paper", str(broken))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{broken}: arms.synthetic_raw.label is missing" in result.stderr
