"""``results.md``: the study-level verdicts first, then the table by arm beside the paper's numbers, every
run, the per-seed comparisons, Grad-CAM shares, figures and the curve of a numeric arm. One function per
section; ``render_markdown`` puts them in order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrsyn.reporting.analysis import StudyAnalysis
from cxrsyn.reporting.paper import Paper
from cxrsyn.reporting.provenance import environments
from cxrsyn.reporting.runs import notes_by_test_set


def render_markdown(analysis: StudyAnalysis, figures: Sequence[Path], paper: Paper | None) -> str:
    lines = [
        *_heading(analysis),
        *environment_lines(environments(analysis.study)),
        *_verdicts(analysis),
        *_by_arm(analysis, paper),
        *_every_run(analysis),
        *_per_seed(analysis),
        *_gradcam_shares(analysis),
        *_figures(figures),
        *_left_out(analysis),
        *curve_lines(analysis.curves, analysis.alpha),
    ]
    return "\n".join(lines) + "\n"


def level(alpha: float) -> str:
    """The confidence level as the tables write it (``95%``)."""
    return f"{100 * (1 - alpha):g}%"


def fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _mean_sd(mean: float, sd: float, seeds: int) -> str:
    return fmt(mean) if seeds < 2 else f"{fmt(mean)} ± {fmt(sd)}"


def _p(value: float) -> str:
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def verdict_lines(verdicts: Sequence[dict[str, Any]], alpha: float) -> list[str]:
    """One sentence per study-level comparison, the numbers a paper quotes."""
    lines = []
    for v in verdicts:
        adjusted = "" if v["adjustment"].startswith("none") else f", Holm-adjusted {_p(v['p_adjusted'])}"
        lines.append(
            f"{v['arm_a']} - {v['arm_b']} on {v['test_set']} ({v['n_seeds']} seed(s), {v['n']} images of "
            f"{v['n_patients']} patients): ΔAUROC {v['delta_auroc']:+.3f} [{level(alpha)} CI "
            f"{v['delta_auroc_ci'][0]:+.3f}, {v['delta_auroc_ci'][1]:+.3f}], p {_p(v['p'])}{adjusted}; "
            f"ΔAUPR {v['delta_aupr']:+.3f} [{v['delta_aupr_ci'][0]:+.3f}, {v['delta_aupr_ci'][1]:+.3f}]"
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
    lines = [
        "",
        f"## Against {points[0]['key']} (mean over seeds, {level(alpha)} CI: seeds and test patients resampled)",
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
    return lines


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
    lines = ["## Study-level comparisons (a - b)", ""]
    if not verdicts:
        return [*lines, "No pair of arms shares a seed and a test set.", ""]
    adjusted = any(not v["adjustment"].startswith("none") for v in verdicts)
    return [
        *lines,
        *(f"- {line}" for line in verdict_lines(verdicts, analysis.alpha)),
        "",
        f"Method: {verdicts[0]['method']}. p values of the comparisons on one test set are "
        f"{'Holm-adjusted together' if adjusted else 'unadjusted (one comparison per test set)'}. "
        "These are the study's claims: over training seeds and test patients, not one trained model.",
        "",
    ]


def _by_arm(analysis: StudyAnalysis, paper: Paper | None) -> list[str]:
    study, summary = analysis.study, analysis.summary
    lines = [
        f"{len(study.runs)} runs, {len(study.arms)} arms, seeds {', '.join(map(str, study.seeds))}. Positive "
        f"class: pneumonia. Mean ± sd over seeds; per-run {level(analysis.alpha)} CIs (patient-clustered "
        "bootstrap) in the second table.",
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
    lines += _paper_rows(analysis, paper)
    for name, note in notes_by_test_set(study).items():
        lines += ["", f"**Note on {name}.** {note}."]
    return lines


def _paper_rows(analysis: StudyAnalysis, paper: Paper | None) -> list[str]:
    """The paper's rows under the table by arm, for the paper's arms that the study's runs match."""
    arms = paper.arms_in(analysis.study) if paper else []
    lines = []
    for arm in arms:
        cells = [f"paper: {arm.label}"]
        for name in analysis.study.test_sets:
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
        lines.append("| " + " | ".join(cells) + " |")
    if arms:
        lines += ["", f"Paper rows: {paper.citation} ({paper.note})."]
    return lines


def _every_run(analysis: StudyAnalysis) -> list[str]:
    ci = f"{level(analysis.alpha)} CI"
    lines = ["", "## Every run", "", f"| arm | seed | test set | AUROC [{ci}] | AUPR [{ci}] | n |"]
    lines.append("|---|---|---|---|---|---|")
    for row in analysis.per_run.itertuples(index=False):
        lines.append(
            f"| {row.arm} | {row.seed} | {row.test_set} | {fmt(row.auroc)} [{fmt(row.auroc_lo)}, "
            f"{fmt(row.auroc_hi)}] | {fmt(row.aupr)} [{fmt(row.aupr_lo)}, {fmt(row.aupr_hi)}] | {row.n} |"
        )
    return lines


def _per_seed(analysis: StudyAnalysis) -> list[str]:
    lines = ["", "## Per seed (descriptive): paired comparisons on the same test images (a - b)", ""]
    if analysis.comparisons.empty:
        return [*lines, "No pair of arms shares a seed and a test set."]
    ci = f"{level(analysis.alpha)} CI"
    lines += [
        "Each row treats one trained model per arm as fixed (DeLong with Obuchowski's patient-clustered "
        "variance; patient-clustered paired bootstrap). They describe the seeds; the study-level lines "
        "above are the test.",
        "",
        f"| a | b | test set | seed | ΔAUROC | DeLong p | ΔAUROC {ci} (bootstrap) | ΔAUPR | ΔAUPR {ci} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in analysis.comparisons.itertuples(index=False):
        lines.append(
            f"| {row.arm_a} | {row.arm_b} | {row.test_set} | {row.seed} | {row.auroc_diff:+.3f} | "
            f"{_p(row.delong_p)} | [{row.boot_auroc_diff_lo:+.3f}, {row.boot_auroc_diff_hi:+.3f}] | "
            f"{row.aupr_diff:+.3f} | [{row.boot_aupr_diff_lo:+.3f}, {row.boot_aupr_diff_hi:+.3f}] |"
        )
    return lines


def _gradcam_shares(analysis: StudyAnalysis) -> list[str]:
    shares = analysis.summary.dropna(subset=["cam_bottom_share"])
    if shares.empty:
        return []
    lines = [
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
    return lines


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
