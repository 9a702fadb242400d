"""Everything a report states about a study, computed once before anything is written: the results tables,
the pairs compared, the study-level verdicts, the per-seed comparisons and the curve of a numeric arm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from cxrsyn.reporting.compare import (
    Resampling,
    arm_curves,
    compare_arms,
    pairs_to_compare,
    study_comparisons,
)
from cxrsyn.reporting.runs import Study, experiment_settings, results_table, summary_table


@dataclass
class StudyAnalysis:
    study: Study
    experiment: dict[str, Any]  # the runs' experiment block (name, question, compare)
    per_run: pd.DataFrame  # results_table: one row per run and test set
    summary: pd.DataFrame  # summary_table: mean and sd over seeds per arm and test set
    pairs: list[tuple[str, str]]
    verdicts: list[dict[str, Any]]  # study_comparisons: the study's claims
    comparisons: pd.DataFrame  # compare_arms: per seed, descriptive
    curves: list[dict[str, Any]]  # arm_curves: empty unless one arm is numeric
    resampling: Resampling


def analyse(study: Study, resampling: Resampling) -> StudyAnalysis:
    per_run = results_table(study)
    experiment = experiment_settings(study)
    pairs = pairs_to_compare(study, experiment.get("compare"))
    return StudyAnalysis(
        study=study,
        experiment=experiment,
        per_run=per_run,
        summary=summary_table(per_run),
        pairs=pairs,
        verdicts=study_comparisons(study, pairs, resampling),
        comparisons=compare_arms(study, pairs, resampling),
        curves=arm_curves(study, resampling),
        resampling=resampling,
    )
