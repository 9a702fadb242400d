"""``write_report``: read a study's runs, analyse them, and write into the report folder:

- ``results.md`` and ``results.csv``: one row per arm (the overrides that differ between runs, seed aside),
  per test set AUROC and AUPR as mean and sd over seeds, the 95% CI of each run, n; the paper's numbers for
  the arms it reported (``paper.yaml``); paired comparisons between arms; Grad-CAM bottom-band shares.
- ``study_comparisons.csv``: the study-level verdicts (mean difference over seeds, two-level bootstrap).
- ``comparisons.csv``: per pair of arms, test set and seed: DeLong's test and the paired-bootstrap CIs of the
  AUROC and AUPR differences (``cxrsyn.evaluation.statistics``) on the same images.
- ``report.json``: all of the above with the provenance of the runs.
- ``roc_<set>.png``, ``pr_<set>.png``: the curves of every run, one colour per arm; ``gradcam_<set>.png``: each
  arm's Grad-CAM grid; ``scaling_<set>.png``: the metric against a numeric arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrsyn.core.fileio import write_json
from cxrsyn.reporting.analysis import StudyAnalysis, analyse
from cxrsyn.reporting.compare import Resampling, study_table
from cxrsyn.reporting.figures import gradcam_figure, plot_arm_curves, plot_curves
from cxrsyn.reporting.markdown import render_markdown, verdict_lines
from cxrsyn.reporting.paper import PAPER_FILE, load_paper
from cxrsyn.reporting.provenance import provenance
from cxrsyn.reporting.runs import find_runs

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
COMPARISONS_CSV = "comparisons.csv"
STUDY_COMPARISONS_CSV = "study_comparisons.csv"
REPORT_JSON = "report.json"


def write_report(
    folder: str | Path,
    out_dir: str | Path | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    figures: bool = True,
    paper_file: str | Path | None = PAPER_FILE,
) -> dict[str, Any]:
    """Read the runs under ``folder``; write results.md, results.csv, comparisons.csv, report.json and the
    figures into ``out_dir`` (default ``folder``). ``paper_file``: the published numbers shown beside the
    arms they match (None: none). Returns what report.json holds."""
    study = find_runs(folder)
    paper = load_paper(paper_file) if paper_file is not None else None
    out = Path(out_dir or folder)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(study, Resampling(n_resamples, seed, alpha))
    analysis.per_run.to_csv(out / RESULTS_CSV, index=False)
    analysis.comparisons.to_csv(out / COMPARISONS_CSV, index=False)
    study_table(analysis.verdicts).to_csv(out / STUDY_COMPARISONS_CSV, index=False)
    written = (plot_curves(study, out) + gradcam_figure(study, out)) if figures else []
    if figures and analysis.curves:
        written += plot_arm_curves(analysis.curves, study, out)
    (out / RESULTS_MD).write_text(render_markdown(analysis, written, paper))
    report = report_json(folder, analysis, written)
    write_json(out / REPORT_JSON, report)
    _print_summary(
        analysis,
        [out / RESULTS_MD, out / RESULTS_CSV, out / STUDY_COMPARISONS_CSV, out / COMPARISONS_CSV, *written],
    )
    return report


def report_json(folder: str | Path, analysis: StudyAnalysis, figures: Sequence[Path]) -> dict[str, Any]:
    """What ``report.json`` holds: the study's runs and arms, verdicts, curves, tables and provenance."""
    study = analysis.study
    return {
        "folder": str(folder),
        "provenance": provenance(study),
        "runs": len(study.runs),
        "arms": study.arms,
        "unfinished": study.unfinished,
        "excluded": study.excluded,
        "duplicates": study.duplicates,
        "test_sets": study.test_sets,
        "study_comparisons": analysis.verdicts,
        "curves": analysis.curves,
        "summary": analysis.summary.replace({np.nan: None}).to_dict("records"),
        "comparisons": analysis.comparisons.replace({np.nan: None}).to_dict("records"),
        "figures": [path.name for path in figures],
    }


def _print_summary(analysis: StudyAnalysis, written: Sequence[Path]) -> None:
    study = analysis.study
    unfinished = f": {', '.join(study.unfinished)}" if study.unfinished else ""
    excluded = f", {len(study.excluded)} excluded by the experiment" if study.excluded else ""
    print(
        f"report: {len(study.runs)} run(s) in {len(study.arms)} arm(s), {len(study.test_sets)} test set(s), "
        f"{len(study.unfinished)} unfinished job folder(s){unfinished}{excluded}"
    )
    for line in verdict_lines(analysis.verdicts, analysis.resampling.alpha):
        print(f"  {line}")
    for path in written:
        print(f"  wrote {path}")
