"""``write_report``: read a study's runs, analyse them, and write into the report folder:

- ``results.md`` and ``results.csv``: one row per arm (the overrides that differ between runs, seed aside),
  per test set AUROC and AUPR as mean and sd over seeds, the 95% CI of each run, n; the paper's numbers for
  the arms it reported (``paper.yaml``); paired comparisons between arms; Grad-CAM bottom-band shares.
- ``study_comparisons.csv``: the study-level verdicts (mean difference over seeds, t on seed and patient
  variance), each with its role (primary or secondary) and Holm family per metric.
- ``test_set_comparisons.csv``: with ``experiment.compare_test_sets``, per arm the AUROC on one test set minus
  another for the same models (``cxrsyn.reporting.endpoints``).
- ``comparisons.csv``: per pair of arms, test set and seed: DeLong's test and the paired-bootstrap CIs of the
  AUROC and AUPR differences (``cxrsyn.evaluation.statistics``) on the same images.
- ``report.json``: all of the above with the provenance of the runs.
- ``roc_<set>.png``, ``pr_<set>.png``: the curves of every run, one colour per arm; ``gradcam_<set>.png``: each
  arm's Grad-CAM grid; ``scaling_<set>.png``: the metric against a numeric arm.

All of them are published together (``cxrsyn.core.fileio.publishing``): written into a staging folder, then
moved into place with ``report.json`` (which lists them under ``outputs``) last, while the folder is locked
(``cxrsyn.core.runfolder``); a kill or a full disk leaves the previous report as it was. CSVs are
spreadsheet-safe (``cxrsyn.core.fileio.write_csv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrsyn.core.fileio import publishing, write_csv, write_text
from cxrsyn.core.runfolder import exclusive
from cxrsyn.reporting.analysis import StudyAnalysis, analyse
from cxrsyn.reporting.compare import Resampling, study_table
from cxrsyn.reporting.endpoints import set_table
from cxrsyn.reporting.figures import gradcam_figure, plot_arm_curves, plot_curves
from cxrsyn.reporting.markdown import render_markdown, verdict_lines
from cxrsyn.reporting.paper import PAPER_FILE, load_paper
from cxrsyn.reporting.provenance import provenance
from cxrsyn.reporting.runs import find_runs

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
COMPARISONS_CSV = "comparisons.csv"
STUDY_COMPARISONS_CSV = "study_comparisons.csv"
TEST_SET_COMPARISONS_CSV = "test_set_comparisons.csv"
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
    figures into ``out_dir`` (default ``folder``), all at once. ``paper_file``: the published numbers shown
    beside the arms they match (None: none). Returns what report.json holds."""
    out = Path(out_dir or folder)
    if not Path(folder).is_dir():
        find_runs(folder)  # its one line for a missing folder, before the lock makes one
    with exclusive(out, "cxrsyn.report"):
        study = find_runs(folder)
        paper = load_paper(paper_file) if paper_file is not None else None
        analysis = analyse(study, Resampling(n_resamples, seed, alpha))
        with publishing(out, REPORT_JSON) as publication:
            staging = publication.staging
            write_csv(staging / RESULTS_CSV, analysis.per_run)
            write_csv(staging / COMPARISONS_CSV, analysis.comparisons)
            write_csv(staging / STUDY_COMPARISONS_CSV, study_table(analysis.verdicts))
            if analysis.set_verdicts:
                write_csv(staging / TEST_SET_COMPARISONS_CSV, set_table(analysis.set_verdicts))
            written = (plot_curves(study, staging) + gradcam_figure(study, staging)) if figures else []
            if figures and analysis.curves:
                written += plot_arm_curves(analysis.curves, study, staging)
            write_text(staging / RESULTS_MD, render_markdown(analysis, written, paper))
            report = publication.write_manifest(report_json(folder, analysis, written))
    names = [
        RESULTS_MD,
        RESULTS_CSV,
        STUDY_COMPARISONS_CSV,
        COMPARISONS_CSV,
        *([TEST_SET_COMPARISONS_CSV] if analysis.set_verdicts else []),
        *(path.name for path in written),
    ]
    _print_summary(analysis, [out / name for name in names])
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
        "endpoints": {"primary": analysis.endpoint, "families": analysis.families},
        "study_comparisons": analysis.verdicts,
        "test_set_comparisons": analysis.set_verdicts,
        "training": analysis.budget,
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
