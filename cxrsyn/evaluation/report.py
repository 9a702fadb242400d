"""A study's results from its run folders: the paper-layout table, paired comparisons and figures.

``python -m cxrsyn.report DIR`` reads every ``metrics.json`` under DIR (one run, or a multirun's job
folders) and writes into DIR (or ``--out``):

- ``results.md`` and ``results.csv``: one row per arm (the overrides that differ between runs, seed aside),
  per test set AUROC and AUPR as mean and sd over seeds, the 95% CI of each run, n; the paper's numbers for
  the arms it reported; paired comparisons between arms; Grad-CAM bottom-band shares.
- ``comparisons.csv``: per pair of arms, test set and seed: DeLong's test and the paired-bootstrap CIs of the
  AUROC and AUPR differences (``cxrsyn.evaluation.statistics``) on the same images.
- ``roc_<set>.png``, ``pr_<set>.png``: the curves of every run, one colour per arm.
- ``gradcam_<set>.png``: each arm's Grad-CAM grid (true and false positives and negatives).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.core.compose import override_set
from cxrsyn.core.config import code_version
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import read_yaml, write_json
from cxrsyn.evaluation.outputs import EXCLUDED_NAME, METRICS_NAME, patients_of
from cxrsyn.evaluation.replicates import duplicate_line, one_run_per_seed
from cxrsyn.evaluation.statistics import arm_bootstrap, delong, holm, paired_bootstrap, study_bootstrap

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
COMPARISONS_CSV = "comparisons.csv"
STUDY_COMPARISONS_CSV = "study_comparisons.csv"
REPORT_JSON = "report.json"
# Peng, Lam, Qiu, arXiv 2512.00428 (one run per arm): training data -> test set -> metric -> (value, CI)
PAPER = {
    "synthetic_cropped": {
        "rsna": {"auroc": (0.923, (0.919, 0.927)), "aupr": (0.900, (0.894, 0.907)), "n": 14863},
        "kermany": {"auroc": (0.824, (0.810, 0.836)), "aupr": (0.913, (0.904, 0.922)), "n": 5856},
    },
    "synthetic_raw": {"rsna": {"auroc": (0.853, None), "aupr": (None, None), "n": 14863}},
}
PAPER_LABELS = {"synthetic_cropped": "Nano Banana, bottom 30% cropped", "synthetic_raw": "Nano Banana, raw"}
IGNORED_OVERRIDE_PREFIXES = ("seed=", "hydra.", "hydra/")


@dataclass
class Run:
    """One training run's folder and its ``metrics.json``."""

    folder: Path
    metrics: dict[str, Any]
    arm: str = ""
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def info(self) -> dict[str, Any]:
        return self.metrics.get("run", {})

    @property
    def seed(self) -> int:
        return int(self.info.get("seed", 0))

    def predictions(self, test_set: str) -> pd.DataFrame:
        """The run's predictions file for ``test_set``, read once (comparisons and curves both use it)."""
        if test_set not in self._tables:
            self._tables[test_set] = pd.read_csv(
                self.folder / self.metrics["test_sets"][test_set]["predictions"]
            )
        return self._tables[test_set]


@dataclass
class Study:
    runs: list[Run]
    unfinished: list[str] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)  # job folder -> experiment.exclude cell
    duplicates: dict[str, str] = field(
        default_factory=dict
    )  # run folder left out -> the run of its arm and seed

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(run.arm for run in self.runs))

    @property
    def test_sets(self) -> list[str]:
        return list(dict.fromkeys(name for run in self.runs for name in run.metrics["test_sets"]))

    def of_arm(self, arm: str) -> list[Run]:
        return sorted((run for run in self.runs if run.arm == arm), key=lambda run: run.seed)


def find_runs(folder: str | Path) -> Study:
    """Every finished run under ``folder`` (itself, or job folders below it); job folders without
    ``metrics.json`` are listed as unfinished. Arms are named by the overrides that differ between runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CxrsynError(f"report folder {folder} does not exist; give a run or multirun folder")
    paths = sorted(folder.rglob(METRICS_NAME), key=lambda path: _natural_key(path.parent, folder))
    paths = [path for path in paths if "wandb" not in path.parts]
    loaded = [(path.parent, json.loads(path.read_text())) for path in paths]
    # training runs only: cxrsyn.evaluate writes a metrics.json without "run"
    runs = [Run(run_dir, metrics) for run_dir, metrics in loaded if "run" in metrics]
    if not runs:
        raise CxrsynError(
            f"no training run under {folder} (no metrics.json with a 'run' entry); give the folder that "
            "`python -m cxrsyn.train` (hydra.run.dir) or a multirun (hydra.sweep.dir) wrote"
        )
    finished = {run.folder for run in runs}
    jobs = [job.parent for job in folder.rglob(".hydra")]
    excluded = {
        str(job.relative_to(folder)) or ".": json.loads((job / EXCLUDED_NAME).read_text())["cell"]
        for job in jobs
        if (job / EXCLUDED_NAME).is_file()
    }
    unfinished = [
        str(job.relative_to(folder)) or "."
        for job in jobs
        if job not in finished and not (job / METRICS_NAME).exists() and not (job / EXCLUDED_NAME).exists()
    ]
    name_arms(runs)
    runs, duplicates = one_run_per_seed(runs, lambda r: r.arm, lambda r: r.seed, lambda r: _name(r, folder))
    if duplicates:
        print(duplicate_line(duplicates))
    return Study(runs, sorted(unfinished), dict(sorted(excluded.items())), duplicates)


def _name(run: Run, root: Path) -> str:
    return str(run.folder.relative_to(root)) or "."


def _natural_key(path: Path, root: Path) -> list[Any]:
    parts = path.relative_to(root).parts
    return [(0, int(part)) if part.isdigit() else (1, part) for part in parts]


def name_arms(runs: Sequence[Run]) -> None:
    """Arm = the overrides whose values differ between runs (seed and hydra settings aside), in the order
    they were given; with none differing, the training data's name."""
    per_run = [_override_map(run) for run in runs]
    keys = list(dict.fromkeys(key for overrides in per_run for key in overrides))
    varying = [key for key in keys if len({overrides.get(key) for overrides in per_run}) > 1]
    for run, overrides in zip(runs, per_run, strict=True):
        parts = [f"{key}={overrides[key]}" for key in varying if key in overrides]
        run.arm = ",".join(parts) or f"data={run.info.get('train_data') or 'default'}"


def _override_map(run: Run) -> dict[str, str]:
    overrides = {}
    for item in run.info.get("overrides", []):
        if "=" in item and not item.startswith(IGNORED_OVERRIDE_PREFIXES):
            key, value = item.split("=", 1)
            overrides[key.lstrip("+~")] = value
    return overrides


# ------------------------------------------------------------------------------------------------ tables
def results_table(study: Study) -> pd.DataFrame:
    """One row per run and test set: arm, seed, n, AUROC and AUPR with their CIs, CAM bottom-band share."""
    rows = []
    for run in study.runs:
        for name, result in run.metrics["test_sets"].items():
            auroc_ci, aupr_ci = result.get("auroc_ci") or [None, None], result.get("aupr_ci") or [None, None]
            cam = (run.metrics.get("gradcam") or {}).get(name, {}).get("bottom_band_share", {})
            rows.append(
                {
                    "arm": run.arm,
                    "train_data": run.info.get("train_data"),
                    "source": run.info.get("source"),
                    "seed": run.seed,
                    "test_set": name,
                    "n": result["n"],
                    "n_pos": result["n_pos"],
                    "auroc": result["auroc"],
                    "auroc_lo": auroc_ci[0],
                    "auroc_hi": auroc_ci[1],
                    "aupr": result["aupr"],
                    "aupr_lo": aupr_ci[0],
                    "aupr_hi": aupr_ci[1],
                    "cam_bottom_share": cam.get("mean"),
                    "run": str(run.folder),
                }
            )
    return pd.DataFrame(rows)


def summary_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per arm and test set (sd is empty with one seed)."""
    grouped = per_run.groupby(["arm", "test_set"], sort=False)
    summary = grouped.agg(
        train_data=("train_data", "first"),
        source=("source", "first"),
        seeds=("seed", "nunique"),
        n=("n", "first"),
        auroc_mean=("auroc", "mean"),
        auroc_sd=("auroc", "std"),
        aupr_mean=("aupr", "mean"),
        aupr_sd=("aupr", "std"),
        cam_bottom_share=("cam_bottom_share", "mean"),
    )
    return summary.reset_index()


def pairs_to_compare(study: Study, requested: Sequence[Sequence[str]] | None) -> list[tuple[str, str]]:
    """The arm pairs of ``experiment.compare``, or every pair of arms when the experiment names none. A side
    is one or more overrides (``data=a`` or ``data=a,mixing.k=25``); when a side matches several arms (a
    study crossing two keys), each arm of side a is paired with the arm of side b that has the same other
    overrides: ``[data=a, data=b]`` compares a with b at every k."""
    arms = study.arms
    if not requested:
        return list(itertools.combinations(arms, 2))
    pairs = []
    for a, b in requested:
        found = _matched_pairs(arms, str(a), str(b))
        if found:
            pairs.extend(pair for pair in found if pair not in pairs)
        else:
            print(f"report: experiment.compare [{a}, {b}] matches no two arms of {arms}; not compared")
    if not pairs:
        print("report: comparing every pair of arms instead")
    return pairs or list(itertools.combinations(arms, 2))


def _matched_pairs(arms: Sequence[str], a: str, b: str) -> list[tuple[str, str]]:
    wanted_a, wanted_b = override_set(a), override_set(b)
    side_a = [arm for arm in arms if wanted_a <= override_set(arm)]
    side_b = [arm for arm in arms if wanted_b <= override_set(arm)]
    if len(side_a) == 1 and len(side_b) == 1:
        return [(side_a[0], side_b[0])] if side_a != side_b else []
    by_rest = {override_set(arm) - wanted_b: arm for arm in side_b}
    pairs = []
    for arm in side_a:
        match = by_rest.get(override_set(arm) - wanted_a)
        if match is not None and match != arm:
            pairs.append((arm, match))
    return pairs


def paired_predictions(run_a: Run, run_b: Run, test_set: str) -> pd.DataFrame:
    """The two runs' predictions on ``test_set`` matched by path: ``path``, ``label``, ``patient``,
    ``prob_a``, ``prob_b``. Different images are a one-line error."""
    table_a, table_b = run_a.predictions(test_set), run_b.predictions(test_set)
    merged = table_a[["path", "label", "prob"]].merge(
        table_b[["path", "label", "prob"]], on="path", suffixes=("_a", "_b")
    )
    if (
        len(merged) != len(table_a)
        or len(merged) != len(table_b)
        or (merged["label_a"] != merged["label_b"]).any()
    ):
        raise CxrsynError(
            f"test set {test_set!r} differs between {run_a.folder} and {run_b.folder}; paired tests "
            "need both runs scored on the same images"
        )
    patients = dict(zip(table_a["path"], patients_of(table_a), strict=True))
    return pd.DataFrame(
        {
            "path": merged["path"],
            "label": merged["label_a"],
            "patient": merged["path"].map(patients),
            "prob_a": merged["prob_a"],
            "prob_b": merged["prob_b"],
        }
    )


def seed_pairs(study: Study, arm_a: str, arm_b: str) -> list[tuple[Run, Run]]:
    """Runs of the two arms that share a seed (the paired design); unpaired runs are reported."""
    runs_b = {run.seed: run for run in study.of_arm(arm_b)}
    pairs = []
    for run_a in study.of_arm(arm_a):
        run_b = runs_b.get(run_a.seed)
        if run_b is None:
            print(f"report: {arm_a} seed {run_a.seed} has no run of {arm_b} with that seed; not paired")
            continue
        pairs.append((run_a, run_b))
    return pairs


def compare_arms(
    study: Study,
    pairs: Sequence[tuple[str, str]],
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per seed (descriptive): for each pair (a, b), test set and seed both arms ran, DeLong's test with
    Obuchowski's patient-clustered variance and the patient-clustered paired bootstrap of a - b on the same
    images (rows matched by path)."""
    rows = []
    for arm_a, arm_b in pairs:
        for run_a, run_b in seed_pairs(study, arm_a, arm_b):
            for name in run_a.metrics["test_sets"]:
                if name not in run_b.metrics["test_sets"]:
                    continue
                paired = paired_predictions(run_a, run_b, name)
                labels, patients = paired["label"].to_numpy(), paired["patient"].to_numpy()
                a, b = paired["prob_a"].to_numpy(), paired["prob_b"].to_numpy()
                test = delong(labels, a, b, alpha, patients=patients)
                boot = paired_bootstrap(labels, a, b, n_resamples, seed, alpha, patients=patients)
                rows.append(
                    {
                        "arm_a": arm_a,
                        "arm_b": arm_b,
                        "test_set": name,
                        "seed": run_a.seed,
                        "n": len(paired),
                        "n_patients": int(paired["patient"].nunique()),
                        "auroc_a": test["auroc_a"],
                        "auroc_b": test["auroc_b"],
                        "auroc_diff": test["auroc_diff"],
                        "delong_z": test["z"],
                        "delong_p": test["p_value"],
                        "delong_ci_lo": test["auroc_diff_ci"][0],
                        "delong_ci_hi": test["auroc_diff_ci"][1],
                        "delong_method": test["method"],
                        "boot_auroc_diff_lo": boot["auroc_diff_ci"][0],
                        "boot_auroc_diff_hi": boot["auroc_diff_ci"][1],
                        "aupr_diff": boot["aupr_diff"],
                        "boot_aupr_diff_lo": boot["aupr_diff_ci"][0],
                        "boot_aupr_diff_hi": boot["aupr_diff_ci"][1],
                    }
                )
    return pd.DataFrame(rows)


def study_comparisons(
    study: Study,
    pairs: Sequence[tuple[str, str]],
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """The study's verdicts: for each pair (a, b) and test set, the mean difference a - b over the seeds
    both arms ran, with the two-level paired bootstrap (seeds, then test patients: ``study_bootstrap``).
    p values of the pairs compared on one test set are Holm-adjusted together (``p_adjusted``)."""
    results: list[dict[str, Any]] = []
    for arm_a, arm_b in pairs:
        runs = seed_pairs(study, arm_a, arm_b)
        names = [
            n
            for n in study.test_sets
            if all(n in a.metrics["test_sets"] and n in b.metrics["test_sets"] for a, b in runs)
        ]
        for name in names if runs else []:
            tables = [paired_predictions(a, b, name) for a, b in runs]
            first = tables[0].sort_values("path").reset_index(drop=True)
            aligned = []
            for table in tables:
                table = table.sort_values("path").reset_index(drop=True)
                if not table["path"].equals(first["path"]):
                    raise CxrsynError(
                        f"test set {name!r} holds different images in different seeds of {arm_a} / {arm_b}; "
                        "a study-level comparison needs every seed scored on the same images"
                    )
                aligned.append(table)
            boot = study_bootstrap(
                first["label"].to_numpy(),
                np.stack([t["prob_a"].to_numpy() for t in aligned]),
                np.stack([t["prob_b"].to_numpy() for t in aligned]),
                n_resamples,
                seed,
                alpha,
                patients=first["patient"].to_numpy(),
            )
            results.append(
                {
                    "arm_a": arm_a,
                    "arm_b": arm_b,
                    "test_set": name,
                    "n_seeds": boot["n_seeds"],
                    "seeds": [a.seed for a, _ in runs],
                    "n": len(first),
                    "n_patients": int(first["patient"].nunique()),
                    "delta_auroc": boot["delta_auroc"],
                    "delta_auroc_ci": boot["delta_auroc_ci"],
                    "delta_aupr": boot["delta_aupr"],
                    "delta_aupr_ci": boot["delta_aupr_ci"],
                    "p": boot["p_auroc"],
                    "p_aupr": boot["p_aupr"],
                    "per_seed_delta_auroc": boot["per_seed_delta_auroc"],
                    "method": boot["method"],
                }
            )
    for name in dict.fromkeys(result["test_set"] for result in results):
        family = [result for result in results if result["test_set"] == name]
        for key in ("p", "p_aupr"):
            for result, adjusted in zip(family, holm([r[key] for r in family]), strict=True):
                result[f"{key}_adjusted"] = adjusted
        for result in family:
            result["adjustment"] = (
                f"Holm over the {len(family)} comparisons on {name}"
                if len(family) > 1
                else "none (one comparison)"
            )
    return results


# ------------------------------------------------------------------------------------------- numeric arms
def numeric_arm_key(study: Study) -> str | None:
    """The one varying override whose values are all numbers (a count, a fraction, k), if there is one:
    such a study is read as a curve of the metric against that value."""
    per_run = [_override_map(run) for run in study.runs]
    keys = list(dict.fromkeys(key for overrides in per_run for key in overrides))
    varying = [key for key in keys if len({overrides.get(key) for overrides in per_run}) > 1]
    numeric = [key for key in varying if all(_is_number(overrides.get(key)) for overrides in per_run)]
    return numeric[0] if len(numeric) == 1 else None


def _is_number(value: str | None) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return value is not None


def arm_curves(
    study: Study, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """For a study with a numeric arm (``numeric_arm_key``): per test set, line (the other varying overrides)
    and arm value, the mean AUROC and AUPR over seeds with the two-level bootstrap CI (``arm_bootstrap``)."""
    key = numeric_arm_key(study)
    if key is None:
        return []
    points = []
    for arm in study.arms:
        runs = study.of_arm(arm)
        overrides = _override_map(runs[0])
        line = ",".join(part for part in arm.split(",") if not part.startswith(f"{key}=")) or "all"
        for name in study.test_sets:
            tables = [
                run.predictions(name).sort_values("path").reset_index(drop=True)
                for run in runs
                if name in run.metrics["test_sets"]
            ]
            if not tables or any(not t["path"].equals(tables[0]["path"]) for t in tables):
                continue
            boot = arm_bootstrap(
                tables[0]["label"].to_numpy(),
                np.stack([t["prob"].to_numpy() for t in tables]),
                n_resamples,
                seed,
                alpha,
                patients=patients_of(tables[0]),
            )
            points.append(
                {"key": key, "value": float(overrides[key]), "line": line, "test_set": name, **boot}
            )
    return sorted(points, key=lambda point: (point["test_set"], point["line"], point["value"]))


def plot_arm_curves(points: Sequence[dict[str, Any]], study: Study, out_dir: Path) -> list[Path]:
    """``scaling_<set>.png``: AUROC and AUPR against the arm value, one line per group of the other
    overrides, the study-level 95% CI as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name in dict.fromkeys(point["test_set"] for point in points):
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for axis, metric in zip(axes, ("auroc", "aupr"), strict=True):
            for line in dict.fromkeys(p["line"] for p in points if p["test_set"] == name):
                mine = [p for p in points if p["test_set"] == name and p["line"] == line]
                x = [p["value"] for p in mine]
                axis.plot(x, [p[metric] for p in mine], marker="o", label=line)
                axis.fill_between(
                    x, [p[f"{metric}_ci"][0] for p in mine], [p[f"{metric}_ci"][1] for p in mine], alpha=0.2
                )
            axis.set(xlabel=mine[0]["key"], ylabel=f"{metric.upper()} (mean over seeds, 95% CI)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.suptitle(f"{name}: metric against {mine[0]['key']} ({_source_note(study)})", fontsize=11)
        written.append(_save(figure, out_dir / f"scaling_{name}.png", dpi=110))
    return written


# ----------------------------------------------------------------------------------------------- figures
def plot_curves(study: Study, out_dir: Path) -> list[Path]:
    """``roc_<set>.png`` and ``pr_<set>.png``: every run's curve, one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cxrsyn.evaluation.metrics import pr_curve, roc_curve

    written = []
    colours = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(study.arms)}
    for name in study.test_sets:
        for kind, curve, axes_labels in (
            ("roc", roc_curve, ("false positive rate", "true positive rate")),
            ("pr", pr_curve, ("recall", "precision")),
        ):
            figure, axes = plt.subplots(figsize=(5.5, 5))
            for arm in study.arms:
                for i, run in enumerate(study.of_arm(arm)):
                    if name not in run.metrics["test_sets"]:
                        continue
                    table = run.predictions(name)
                    x, y = curve(table["label"].to_numpy(), table["prob"].to_numpy())
                    if kind == "pr":
                        x, y = y, x  # recall on the x axis
                    score = run.metrics["test_sets"][name]["auroc" if kind == "roc" else "aupr"]
                    label = (
                        f"{arm} (seed {run.seed}: {score:.3f})"
                        if i == 0 or len(study.of_arm(arm)) < 4
                        else None
                    )
                    axes.plot(x, y, color=colours[arm], alpha=0.8, lw=1.2, label=label)
            if kind == "roc":
                axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            axes.set(xlabel=axes_labels[0], ylabel=axes_labels[1], xlim=(0, 1), ylim=(0, 1.02))
            axes.set_title(f"{name}: {kind.upper()} ({_source_note(study)})", fontsize=10)
            axes.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
            written.append(_save(figure, out_dir / f"{kind}_{name}.png", dpi=120))
    return written


def gradcam_figure(study: Study, out_dir: Path) -> list[Path]:
    """``gradcam_<set>.png``: the Grad-CAM grid of each arm's first seed, one arm per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    written = []
    for name in study.test_sets:
        panels = []
        for arm in study.arms:
            run = study.of_arm(arm)[0]
            grid = (run.metrics.get("gradcam") or {}).get(name, {}).get("grid")
            if grid and (run.folder / grid).is_file():
                share = run.metrics["gradcam"][name]["bottom_band_share"]["mean"]
                panels.append(
                    (f"{arm} (seed {run.seed}); CAM share in bottom band {_fmt(share, 2)}", run.folder / grid)
                )
        if not panels:
            continue
        images = [np.asarray(Image.open(path).convert("RGB")) for _, path in panels]
        # one arm per row, each grid at its own pixel size (side by side, every tile shrank to a few pixels)
        width = max(image.shape[1] for image in images) / 100
        heights = [image.shape[0] / 100 + 0.35 for image in images]
        figure, axes = plt.subplots(
            len(images), 1, figsize=(width, sum(heights) + 0.4), gridspec_kw={"height_ratios": heights}
        )
        for axis, (title, _), image in zip(np.atleast_1d(axes), panels, images, strict=True):
            axis.imshow(image)
            axis.set_title(title, fontsize=12)
            axis.axis("off")
        figure.suptitle(f"Grad-CAM on {name} ({_source_note(study)})", fontsize=13)
        written.append(_save(figure, out_dir / f"gradcam_{name}.png", dpi=100))
    return written


def _save(figure: Any, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def _source_note(study: Study) -> str:
    sources = {run.info.get("source") for run in study.runs}
    return "PHANTOM stand-ins, not evidence" if "phantom" in sources else "real test data"


# ----------------------------------------------------------------------------------------------- writing
def write_report(
    folder: str | Path,
    out_dir: str | Path | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    figures: bool = True,
) -> dict[str, Any]:
    """Read the runs under ``folder``; write results.md, results.csv, comparisons.csv, report.json and the
    figures into ``out_dir`` (default ``folder``). Returns what report.json holds."""
    study = find_runs(folder)
    out = Path(out_dir or folder)
    out.mkdir(parents=True, exist_ok=True)
    per_run = results_table(study)
    summary = summary_table(per_run)
    experiment = _experiment(study)
    pairs = pairs_to_compare(study, experiment.get("compare"))
    verdicts = study_comparisons(study, pairs, n_resamples, seed, alpha)
    comparisons = compare_arms(study, pairs, n_resamples, seed, alpha)
    per_run.to_csv(out / RESULTS_CSV, index=False)
    comparisons.to_csv(out / COMPARISONS_CSV, index=False)
    _study_table(verdicts).to_csv(out / STUDY_COMPARISONS_CSV, index=False)
    curves = arm_curves(study, n_resamples, seed, alpha)
    written = (plot_curves(study, out) + gradcam_figure(study, out)) if figures else []
    if figures and curves:
        written += plot_arm_curves(curves, study, out)
    markdown = render_markdown(study, experiment, per_run, summary, comparisons, verdicts, written, alpha)
    markdown += _curve_markdown(curves, alpha)
    (out / RESULTS_MD).write_text(markdown)
    report = {
        "folder": str(folder),
        "provenance": provenance(study),
        "runs": len(study.runs),
        "arms": study.arms,
        "unfinished": study.unfinished,
        "excluded": study.excluded,
        "duplicates": study.duplicates,
        "test_sets": study.test_sets,
        "study_comparisons": verdicts,
        "curves": curves,
        "summary": summary.replace({np.nan: None}).to_dict("records"),
        "comparisons": comparisons.replace({np.nan: None}).to_dict("records"),
        "figures": [path.name for path in written],
    }
    write_json(out / REPORT_JSON, report)
    print(
        f"report: {len(study.runs)} run(s) in {len(study.arms)} arm(s), {len(study.test_sets)} test set(s), "
        f"{len(study.unfinished)} unfinished job folder(s){': ' + ', '.join(study.unfinished) if study.unfinished else ''}"
        f"{f', {len(study.excluded)} excluded by the experiment' if study.excluded else ''}"
    )
    for line in _verdict_lines(verdicts, alpha):
        print(f"  {line}")
    for path in (
        out / RESULTS_MD,
        out / RESULTS_CSV,
        out / STUDY_COMPARISONS_CSV,
        out / COMPARISONS_CSV,
        *written,
    ):
        print(f"  wrote {path}")
    return report


def provenance(study: Study) -> dict[str, Any]:
    """What produced these runs: the commits they were trained with (``run.code`` of their metrics.json) and
    the one reporting, each run's command-line overrides, and a hash of each run's resolved config without its
    machine-specific paths, so two folders can be checked for the same settings."""
    runs = []
    for run in study.runs:
        runs.append(
            {
                "folder": str(run.folder),
                "arm": run.arm,
                "seed": run.seed,
                "overrides": run.info.get("overrides", []),
                "config_sha256": config_hash(run.folder / "config.yaml"),
                "numerics": (run.info.get("environment") or {}).get("numerics"),
            }
        )
    commits = sorted({str((run.info.get("code") or {}).get("commit")) for run in study.runs})
    return {
        "reported_with": code_version(),
        "trained_with_commits": commits,
        "environments": environments(study),
        "runs": runs,
    }


def environments(study: Study) -> list[dict[str, Any]]:
    """The distinct environments the runs were trained in (``run.environment``: versions, CPU, GPU), each
    with its run count; runs from before environments were recorded count under ``numerics`` null."""
    found: dict[str | None, dict[str, Any]] = {}
    for run in study.runs:
        info = run.info.get("environment") or {}
        entry = found.setdefault(info.get("numerics"), {**info, "numerics": info.get("numerics"), "runs": 0})
        entry["runs"] += 1
    return list(found.values())


def config_hash(path: Path) -> str | None:
    """sha256 of a run's resolved config with ``paths`` (where this machine keeps data and outputs) written as
    placeholders wherever they appear."""
    import hashlib

    if not path.is_file():
        return None
    config = read_yaml(path) or {}
    paths = config.pop("paths", None) or {}
    text = json.dumps(config, sort_keys=True, default=str)
    for key, value in sorted(paths.items(), key=lambda item: -len(str(item[1]))):
        if value:  # the resolved config repeats the paths inside other values (data roots, checkpoint dirs)
            text = text.replace(str(value), f"<paths.{key}>")
    return hashlib.sha256(text.encode()).hexdigest()


def _environment_lines(found: Sequence[dict[str, Any]]) -> list[str]:
    """One line per training environment; a warning when the runs come from more than one, since their
    numbers then differ by the machines' rounding as well as by seed."""
    lines = []
    for env in found:
        if env.get("numerics") is None:
            lines.append(
                f"- Environment not recorded ({env['runs']} run(s) trained before cxrsyn recorded it)."
            )
            continue
        packages = env.get("packages") or {}
        device = (
            env.get("gpu")
            or f"{env.get('cpu')} ({env.get('cpu_capability')}, {env.get('threads')} torch thread(s))"
        )
        lines.append(
            f"- Environment `{env['numerics']}` ({env['runs']} run(s)): {device}; torch {packages.get('torch')}, "
            f"timm {packages.get('timm')}, lightning {packages.get('lightning')}, python {env.get('python')}."
        )
    if len(found) > 1:
        lines.append(
            "- **Runs from more than one environment.** The same seed gives slightly different weights on "
            "different hardware or library versions, so seeds are not bit-reproducible across these runs."
        )
    return ["Trained in:", "", *lines, ""]


def _curve_markdown(points: Sequence[dict[str, Any]], alpha: float) -> str:
    if not points:
        return ""
    level = f"{100 * (1 - alpha):g}%"
    lines = [
        "",
        f"## Against {points[0]['key']} (mean over seeds, {level} CI: seeds and test patients resampled)",
        "",
        f"| test set | line | {points[0]['key']} | seeds | AUROC | AUPR |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['test_set']} | {p['line']} | {p['value']:g} | {p['n_seeds']} | {p['auroc']:.3f} "
            f"[{p['auroc_ci'][0]:.3f}, {p['auroc_ci'][1]:.3f}] | {p['aupr']:.3f} "
            f"[{p['aupr_ci'][0]:.3f}, {p['aupr_ci'][1]:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def _study_table(verdicts: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for v in verdicts:
        row = {k: v[k] for k in ("arm_a", "arm_b", "test_set", "n_seeds", "n", "n_patients")}
        for metric in ("auroc", "aupr"):
            row[f"delta_{metric}"] = v[f"delta_{metric}"]
            row[f"delta_{metric}_lo"], row[f"delta_{metric}_hi"] = v[f"delta_{metric}_ci"]
        row.update(
            {k: v[k] for k in ("p", "p_adjusted", "p_aupr", "p_aupr_adjusted", "adjustment", "method")}
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict_lines(verdicts: Sequence[dict[str, Any]], alpha: float) -> list[str]:
    """One sentence per study-level comparison, the numbers a paper quotes."""
    level = f"{100 * (1 - alpha):g}%"
    lines = []
    for v in verdicts:
        adjusted = "" if v["adjustment"].startswith("none") else f", Holm-adjusted {_p(v['p_adjusted'])}"
        lines.append(
            f"{v['arm_a']} - {v['arm_b']} on {v['test_set']} ({v['n_seeds']} seed(s), {v['n']} images of "
            f"{v['n_patients']} patients): ΔAUROC {v['delta_auroc']:+.3f} [{level} CI {v['delta_auroc_ci'][0]:+.3f}, "
            f"{v['delta_auroc_ci'][1]:+.3f}], p {_p(v['p'])}{adjusted}; ΔAUPR {v['delta_aupr']:+.3f} "
            f"[{v['delta_aupr_ci'][0]:+.3f}, {v['delta_aupr_ci'][1]:+.3f}]"
        )
    return lines


def _experiment(study: Study) -> dict[str, Any]:

    config = study.runs[0].folder / "config.yaml"
    if not config.is_file():
        return {}
    return (read_yaml(config) or {}).get("experiment") or {}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _mean_sd(mean: float, sd: float, seeds: int) -> str:
    return _fmt(mean) if seeds < 2 else f"{_fmt(mean)} ± {_fmt(sd)}"


def render_markdown(
    study: Study,
    experiment: dict[str, Any],
    per_run: pd.DataFrame,
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    verdicts: Sequence[dict[str, Any]],
    figures: Sequence[Path],
    alpha: float,
) -> str:
    phantom = "phantom" in {run.info.get("source") for run in study.runs}
    level = f"{100 * (1 - alpha):g}%"
    lines = [f"# {experiment.get('name') or 'Results'}", ""]
    if experiment.get("question"):
        lines += [f"**Question.** {experiment['question']}", ""]
    if phantom:
        lines += [
            "> **PHANTOM RUN.** Trained and tested on cxrsyn's phantom stand-ins (`source=phantom`): a check "
            "that the study runs end to end, not evidence about radiographs. The paper's numbers are shown "
            "for layout only and are not comparable.",
            "",
        ]
    seeds = sorted({run.seed for run in study.runs})
    lines += _environment_lines(environments(study))
    lines += ["## Study-level comparisons (a - b)", ""]
    if verdicts:
        lines += [f"- {line}" for line in _verdict_lines(verdicts, alpha)]
        lines += [
            "",
            f"Method: {verdicts[0]['method']}. p values of the comparisons on one test set are "
            f"{'Holm-adjusted together' if any(not v['adjustment'].startswith('none') for v in verdicts) else 'unadjusted (one comparison per test set)'}. "
            "These are the study's claims: over training seeds and test patients, not one trained model.",
            "",
        ]
    else:
        lines += ["No pair of arms shares a seed and a test set.", ""]
    lines += [
        f"{len(study.runs)} runs, {len(study.arms)} arms, seeds {', '.join(map(str, seeds))}. Positive class: "
        f"pneumonia. Mean ± sd over seeds; per-run {level} CIs (patient-clustered bootstrap) in the second table.",
        "",
        "## Results by arm",
        "",
    ]
    header = ["arm"] + [f"{name} {what}" for name in study.test_sets for what in ("AUROC", "AUPR", "n")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in study.arms:
        cells = [arm]
        for name in study.test_sets:
            row = summary[(summary["arm"] == arm) & (summary["test_set"] == name)]
            if row.empty:
                cells += ["", "", ""]
                continue
            row = row.iloc[0]
            cells += [
                _mean_sd(row["auroc_mean"], row["auroc_sd"], row["seeds"]),
                _mean_sd(row["aupr_mean"], row["aupr_sd"], row["seeds"]),
                f"{int(row['n'])}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    paper_rows = _paper_rows(study)
    for label, values in paper_rows:
        lines.append("| " + " | ".join([label, *values]) + " |")
    if paper_rows:
        lines += ["", "Paper rows: Peng, Lam, Qiu, arXiv 2512.00428 (one run per arm; 95% CI in brackets)."]
    notes = {
        name: result["note"]
        for run in study.runs
        for name, result in run.metrics["test_sets"].items()
        if result.get("note")
    }
    for name, note in notes.items():  # e.g. NIH contains RSNA's images: the two are not independent
        lines += ["", f"**Note on {name}.** {note}."]
    lines += [
        "",
        "## Every run",
        "",
        f"| arm | seed | test set | AUROC [{level} CI] | AUPR [{level} CI] | n |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for row in per_run.itertuples(index=False):
        lines.append(
            f"| {row.arm} | {row.seed} | {row.test_set} | {_fmt(row.auroc)} [{_fmt(row.auroc_lo)}, "
            f"{_fmt(row.auroc_hi)}] | {_fmt(row.aupr)} [{_fmt(row.aupr_lo)}, {_fmt(row.aupr_hi)}] | {row.n} |"
        )
    lines += ["", "## Per seed (descriptive): paired comparisons on the same test images (a - b)", ""]
    if comparisons.empty:
        lines.append("No pair of arms shares a seed and a test set.")
    else:
        lines += [
            "Each row treats one trained model per arm as fixed (DeLong with Obuchowski's patient-clustered "
            "variance; patient-clustered paired bootstrap). They describe the seeds; the study-level lines "
            "above are the test.",
            "",
            f"| a | b | test set | seed | ΔAUROC | DeLong p | ΔAUROC {level} CI (bootstrap) | ΔAUPR | "
            f"ΔAUPR {level} CI |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in comparisons.itertuples(index=False):
            lines.append(
                f"| {row.arm_a} | {row.arm_b} | {row.test_set} | {row.seed} | {row.auroc_diff:+.3f} | "
                f"{_p(row.delong_p)} | [{row.boot_auroc_diff_lo:+.3f}, {row.boot_auroc_diff_hi:+.3f}] | "
                f"{row.aupr_diff:+.3f} | [{row.boot_aupr_diff_lo:+.3f}, {row.boot_aupr_diff_hi:+.3f}] |"
            )
    shares = summary.dropna(subset=["cam_bottom_share"])
    if not shares.empty:
        lines += [
            "",
            "## Where the models look: Grad-CAM mass in the bottom band",
            "",
            "Share of Grad-CAM mass in the bottom 30% of the image (the band the crop removes), mean over a "
            "sample of each test set and over seeds. The watermark hypothesis predicts a larger share for "
            "models trained on raw images.",
            "",
            "| arm | test set | CAM share in bottom band |",
            "|---|---|---|",
        ]
        for row in shares.itertuples(index=False):
            lines.append(f"| {row.arm} | {row.test_set} | {row.cam_bottom_share:.3f} |")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{path.stem}]({path.name})" for path in figures]
    if study.unfinished:
        lines += ["", f"Unfinished job folders (no metrics.json, left out): {', '.join(study.unfinished)}"]
    if study.excluded:
        cells = sorted({",".join(cell) for cell in study.excluded.values()})
        lines += [
            "",
            f"Grid cells the experiment excludes (experiment.exclude; {len(study.excluded)} job(s) not run): "
            + "; ".join(cells),
        ]
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def _paper_key(run: Run) -> str:
    """The paper's arm a run matches: its training data, where raw images cropped on the fly by the
    paper's 30% count as the cropped set."""
    train_data = str(run.info.get("train_data"))
    crop = _override_map(run).get("data.crop_bottom_fraction")
    if train_data == "synthetic_raw" and crop is not None and abs(float(crop) - 0.3) < 1e-9:
        return "synthetic_cropped"
    return train_data


def _paper_rows(study: Study) -> list[tuple[str, list[str]]]:
    rows = []
    for key in dict.fromkeys(_paper_key(run) for run in study.runs):
        reported = PAPER.get(key)
        if not reported:
            continue
        cells = []
        for name in study.test_sets:
            numbers = reported.get(name)
            if not numbers:
                cells += ["", "", ""]
                continue
            for metric in ("auroc", "aupr"):
                value, ci = numbers[metric]
                cells.append(
                    "n/r"
                    if value is None
                    else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                )
            cells.append(f"{numbers['n']}")
        rows.append((f"paper: {PAPER_LABELS[key]}", cells))
    return rows
