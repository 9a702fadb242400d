"""``results.md``: the study-level verdicts first, then the table by arm beside the paper's numbers, every
run, the per-seed comparisons, Grad-CAM shares, figures and the curve of a numeric arm. One function per
section; ``render_markdown`` puts them in order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrsyn.reporting.analysis import StudyAnalysis
from cxrsyn.reporting.compare import MIN_SEEDS
from cxrsyn.reporting.endpoints import endpoint_lines, set_comparison_lines
from cxrsyn.reporting.paper import Paper, PaperArm
from cxrsyn.reporting.provenance import environments
from cxrsyn.reporting.runs import notes_by_test_set


def render_markdown(analysis: StudyAnalysis, figures: Sequence[Path], paper: Paper | None) -> str:
    lines = [
        *_heading(analysis),
        *environment_lines(environments(analysis.study)),
        *_verdicts(analysis),
        *set_comparison_lines(analysis.set_verdicts, analysis.resampling.alpha),
        *_by_arm(analysis, paper),
        *_every_run(analysis),
        *_per_seed(analysis),
        *_gradcam_shares(analysis),
        *_figures(figures),
        *_left_out(analysis),
        *curve_lines(analysis.curves, analysis.resampling.alpha),
    ]
    return "\n".join(lines) + "\n"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table: the header, its rule and one line per row of cells."""
    return [_row(header), "|" + "---|" * len(header), *(_row(cells) for cells in rows)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def level(alpha: float) -> str:
    """The confidence level as the tables write it (``95%``)."""
    return f"{100 * (1 - alpha):g}%"


def fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _mean_sd(mean: float, sd: float, seeds: int) -> str:
    return fmt(mean) if seeds < 2 else f"{fmt(mean)} ± {fmt(sd)}"


def _p(value: float) -> str:
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


UNDERPOWERED = "underpowered; the interval is wide by construction"


def verdict_lines(verdicts: Sequence[dict[str, Any]], alpha: float) -> list[str]:
    """One sentence per study-level comparison, the numbers a paper quotes."""
    lines = []
    for v in verdicts:
        head = (
            f"{v['arm_a']} - {v['arm_b']} on {v['test_set']} ({v['n_seeds']} seed(s), {v['n']} images of "
            f"{v['n_patients']} patients): ΔAUROC {v['delta_auroc']:+.3f}"
        )
        warning = f" (**{UNDERPOWERED}**: fewer than {MIN_SEEDS} seeds)" if v.get("underpowered") else ""
        if v["delta_auroc_ci"] is None:  # one seed
            lo, hi = v["conditional_auroc_ci"]
            lo_pr, hi_pr = v["conditional_aupr_ci"]
            lines.append(
                f"{head}; no verdict about the recipe (1 seed: no seed variance is estimable); conditional on "
                f"this one trained model per arm, test patients only: [{level(alpha)} CI {lo:+.3f}, {hi:+.3f}]; "
                f"ΔAUPR {v['delta_aupr']:+.3f} [{lo_pr:+.3f}, {hi_pr:+.3f}]{warning}"
            )
            continue
        adjusted = "" if v["adjustment"].startswith("none") else f", Holm-adjusted {_p(v['p_adjusted'])}"
        lo, hi = v["delta_auroc_ci"]
        lines.append(
            f"{head} [{level(alpha)} CI {lo:+.3f}, {hi:+.3f}], p {_p(v['p'])}{adjusted}; ΔAUPR "
            f"{v['delta_aupr']:+.3f} [{v['delta_aupr_ci'][0]:+.3f}, {v['delta_aupr_ci'][1]:+.3f}]; se of ΔAUROC "
            f"{v['se_auroc']:.4f} (variance: seeds {v['variance_seed_auroc']:.2g}, test patients "
            f"{v['variance_patients_auroc']:.2g}; t with {v['df']} df){warning}"
        )
    return lines


def environment_lines(found: Sequence[dict[str, Any]]) -> list[str]:
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


def curve_lines(points: Sequence[dict[str, Any]], alpha: float) -> list[str]:
    """The table of a numeric arm's curve (``arm_curves``); nothing without one."""
    if not points:
        return []
    key = points[0]["key"]
    rows = (
        [
            p["test_set"],
            p["line"],
            f"{p['value']:g}",
            f"{p['n_seeds']}",
            *(_curve_cell(p, m) for m in ("auroc", "aupr")),
        ]
        for p in points
    )
    notes = []
    if any(p[f"{m}_ci"] is None for p in points for m in ("auroc", "aupr")):
        notes.append("† one seed: the interval is over test patients only, for that one trained model.")
    if any(1 < p["n_seeds"] < MIN_SEEDS for p in points):
        notes.append(f"Points over fewer than {MIN_SEEDS} seeds are {UNDERPOWERED}.")
    return [
        "",
        f"## Against {key} (mean over seeds, {level(alpha)} CI: Student's t over seeds with the test-patient "
        "variance)",
        "",
        *table(["test set", "line", key, "seeds", "AUROC", "AUPR"], rows),
        *(["", " ".join(notes)] if notes else []),
    ]


def _curve_cell(point: dict[str, Any], metric: str) -> str:
    ci = point[f"{metric}_ci"]
    if ci is None:
        low, high = point[f"conditional_{metric}_ci"]
        return f"{point[metric]:.3f} [{low:.3f}, {high:.3f}]†"
    return f"{point[metric]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _heading(analysis: StudyAnalysis) -> list[str]:
    experiment = analysis.experiment
    lines = [f"# {experiment.get('name') or 'Results'}", ""]
    if experiment.get("question"):
        lines += [f"**Question.** {experiment['question']}", ""]
    if analysis.study.is_phantom:
        lines += [
            "> **PHANTOM RUN.** Trained and tested on cxrsyn's phantom stand-ins (`source=phantom`): a check "
            "that the study runs end to end, not evidence about radiographs. The paper's numbers are shown "
            "for layout only and are not comparable.",
            "",
        ]
    return lines


def _verdicts(analysis: StudyAnalysis) -> list[str]:
    verdicts = analysis.verdicts
    lines = [
        "## Study-level comparisons (a - b)",
        "",
        *endpoint_lines(analysis.endpoint, analysis.families),
    ]
    if not verdicts:
        return [*lines, "No pair of arms shares a seed and a test set.", ""]
    adjusted = any(not v["adjustment"].startswith("none") for v in verdicts)
    few = [v for v in verdicts if v.get("underpowered")]
    warning = []
    if few:
        seeds = sorted({v["n_seeds"] for v in few})
        warning = [
            f"**{len(few)} of {len(verdicts)} comparison(s) rest on {' or '.join(map(str, seeds))} seed(s): "
            f"{UNDERPOWERED}.** The interval uses Student's t with seeds - 1 df (quantile 4.30 at 3 seeds, "
            f"2.78 at 5), so a real difference must be large to show. Run at least {MIN_SEEDS} seeds "
            f"(`'seed=range(0,{MIN_SEEDS})'`).",
            "",
        ]
    methods = "; ".join(f"Method: {method}." for method in dict.fromkeys(v["method"] for v in verdicts))
    for line, verdict in zip(verdict_lines(verdicts, analysis.resampling.alpha), verdicts, strict=True):
        roles = verdict.get("role") or {}
        primary = [metric.upper() for metric, role in roles.items() if role == "primary"]
        tag = f"**primary** (Δ{', Δ'.join(primary)}; the rest secondary)" if primary else "secondary"
        lines.append(f"- {tag}: {line}")
    return [
        *lines,
        "",
        *warning,
        f"{methods} The seed component is s^2 of the per-seed differences less the test-patient noise that "
        "differs between seeds (negative when the seeds scatter less than that noise alone would make them); "
        "the two components add up to se^2. p values of the comparisons on one test set are "
        f"{'Holm-adjusted together' if adjusted else 'unadjusted (one comparison per test set)'}. "
        "These are the study's claims: over training seeds and test patients, not one trained model.",
        "",
    ]


def _by_arm(analysis: StudyAnalysis, paper: Paper | None) -> list[str]:
    study, summary = analysis.study, analysis.summary
    lines = [
        f"{len(study.runs)} runs, {len(study.arms)} arms, seeds {', '.join(map(str, study.seeds))}. Positive "
        f"class: pneumonia. Mean ± sd over seeds; per-run {level(analysis.resampling.alpha)} CIs (patient-clustered "
        "bootstrap) in the second table.",
        "",
        "## Results by arm",
        "",
    ]
    header = ["arm"] + [f"{name} {what}" for name in study.test_sets for what in ("AUROC", "AUPR", "n")]
    header.append("steps")
    rows = []
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
        rows.append([*cells, _steps_cell(analysis.budget["arms"].get(arm) or {})])
    arms = paper.arms_in(study) if paper else []
    paper_rows = [[*row, "n/r"] for row in _paper_rows(arms, study.test_sets)]
    lines += table(header, [*rows, *paper_rows])
    if arms:
        lines += ["", f"Paper rows: {paper.citation} ({paper.note})."]
    for name, note in notes_by_test_set(study).items():
        lines += ["", f"**Note on {name}.** {note}."]
    return [*lines, "", *_budget_lines(analysis.budget)]


def _steps_cell(arm: dict[str, Any]) -> str:
    """The optimiser steps an arm took: one number, a range when its seeds differ, pretraining first."""
    if arm.get("steps") is None:
        return "n/a"
    steps = f"{arm['steps']}" if arm["steps"] == arm["steps_max"] else f"{arm['steps']}-{arm['steps_max']}"
    return f"{arm['pretrain_steps']} + {steps}" if arm.get("pretrain_steps") is not None else steps


def _budget_lines(budget: dict[str, Any]) -> list[str]:
    """What the arms held equal, and a warning when they took different numbers of steps."""
    held = budget.get("held_equal")
    pretrained = any(arm.get("pretrain_steps") is not None for arm in budget["arms"].values())
    pretrain = (
        " An arm with a pretraining stage shows its steps there first (pretraining + the run's own): the "
        "pretraining is that arm's treatment, the run's own steps are what the arms share."
        if pretrained
        else ""
    )
    if budget.get("equal_steps") is None:
        return ["Steps: not recorded by these runs (trained before metrics.json recorded `training`)."]
    if budget["equal_steps"]:
        what = f" (experiment.held_equal: {held})" if held else ""
        return [f"Steps: every arm took the same number of optimiser steps{what}.{pretrain}"]
    warning = (
        "**The arms took different numbers of optimiser steps**"
        + (f" although the study holds {held} equal" if held else "")
        + ": a difference between them mixes their data with their training length."
    )
    return [f"Steps: {warning}{pretrain}"]


def _paper_rows(arms: Sequence[PaperArm], test_sets: Sequence[str]) -> list[list[str]]:
    """The paper's rows under the table by arm, for the paper's arms that the study's runs match."""
    rows = []
    for arm in arms:
        cells = [f"paper: {arm.label}"]
        for name in test_sets:
            reported = arm.test_sets.get(name)
            if not reported:
                cells += ["", "", ""]
                continue
            for metric in ("auroc", "aupr"):
                value, ci = reported.values[metric], reported.cis[metric]
                cells.append(
                    "n/r"
                    if value is None
                    else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                )
            cells.append(f"{reported.n}")
        rows.append(cells)
    return rows


def _every_run(analysis: StudyAnalysis) -> list[str]:
    ci = f"{level(analysis.resampling.alpha)} CI"
    rows = (
        [
            row.arm,
            f"{row.seed}",
            row.test_set,
            f"{fmt(row.auroc)} [{fmt(row.auroc_lo)}, {fmt(row.auroc_hi)}]",
            f"{fmt(row.aupr)} [{fmt(row.aupr_lo)}, {fmt(row.aupr_hi)}]",
            f"{row.n}",
        ]
        for row in analysis.per_run.itertuples(index=False)
    )
    header = ["arm", "seed", "test set", f"AUROC [{ci}]", f"AUPR [{ci}]", "n"]
    return ["", "## Every run", "", *table(header, rows)]


def _per_seed(analysis: StudyAnalysis) -> list[str]:
    lines = ["", "## Per seed (descriptive): paired comparisons on the same test images (a - b)", ""]
    if analysis.comparisons.empty:
        return [*lines, "No pair of arms shares a seed and a test set."]
    ci = f"{level(analysis.resampling.alpha)} CI"
    rows = (
        [
            row.arm_a,
            row.arm_b,
            row.test_set,
            f"{row.seed}",
            f"{row.auroc_diff:+.3f}",
            _p(row.delong_p),
            f"[{row.boot_auroc_diff_lo:+.3f}, {row.boot_auroc_diff_hi:+.3f}]",
            f"{row.aupr_diff:+.3f}",
            f"[{row.boot_aupr_diff_lo:+.3f}, {row.boot_aupr_diff_hi:+.3f}]",
        ]
        for row in analysis.comparisons.itertuples(index=False)
    )
    header = [
        "a",
        "b",
        "test set",
        "seed",
        "ΔAUROC",
        "DeLong p",
        f"ΔAUROC {ci} (bootstrap)",
        "ΔAUPR",
        f"ΔAUPR {ci}",
    ]
    return [
        *lines,
        "Each row treats one trained model per arm as fixed (DeLong with Obuchowski's patient-clustered "
        "variance; patient-clustered paired bootstrap). They describe the seeds; the study-level lines "
        "above are the test.",
        "",
        *table(header, rows),
    ]


def _gradcam_shares(analysis: StudyAnalysis) -> list[str]:
    shares = analysis.summary.dropna(subset=["cam_bottom_share"])
    if shares.empty:
        return []
    rows = ([row.arm, row.test_set, f"{row.cam_bottom_share:.3f}"] for row in shares.itertuples(index=False))
    return [
        "",
        "## Where the models look: Grad-CAM mass in the bottom band",
        "",
        "Share of Grad-CAM mass in the bottom 30% of the image (the band the crop removes), mean over a "
        "sample of each test set and over seeds. The watermark hypothesis predicts a larger share for "
        "models trained on raw images.",
        "",
        *table(["arm", "test set", "CAM share in bottom band"], rows),
    ]


def _figures(figures: Sequence[Path]) -> list[str]:
    if not figures:
        return []
    return ["", "## Figures", ""] + [f"![{path.stem}]({path.name})" for path in figures]


def _left_out(analysis: StudyAnalysis) -> list[str]:
    study = analysis.study
    lines = []
    if study.unfinished:
        lines += ["", f"Unfinished job folders (no metrics.json, left out): {', '.join(study.unfinished)}"]
    if study.excluded:
        cells = sorted({",".join(cell) for cell in study.excluded.values()})
        lines += [
            "",
            f"Grid cells the experiment excludes (experiment.exclude; {len(study.excluded)} job(s) not run): "
            + "; ".join(cells),
        ]
    return lines
