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
from cxrsyn.reporting.endpoints import label_endpoints, primary_endpoint, study_set_comparisons
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
    endpoint: dict[str, Any] | None  # experiment.primary: the primary endpoint
    set_verdicts: list[dict[str, Any]]  # study_set_comparisons: test sets compared with the same models
    families: list[dict[str, Any]]  # label_endpoints: the Holm families, primary first
    budget: dict[str, Any]  # training_budget: what the arms held equal and what they took


def analyse(study: Study, resampling: Resampling) -> StudyAnalysis:
    per_run = results_table(study)
    experiment = experiment_settings(study)
    pairs = pairs_to_compare(study, experiment.get("compare"))
    verdicts = study_comparisons(study, pairs, resampling)
    set_verdicts = study_set_comparisons(study, experiment.get("compare_test_sets"), resampling.alpha)
    endpoint = primary_endpoint(experiment.get("primary"))
    summary = summary_table(per_run)
    return StudyAnalysis(
        study=study,
        experiment=experiment,
        per_run=per_run,
        summary=summary,
        pairs=pairs,
        verdicts=verdicts,
        comparisons=compare_arms(study, pairs, resampling),
        curves=arm_curves(study, resampling),
        resampling=resampling,
        endpoint=endpoint,
        set_verdicts=set_verdicts,
        families=label_endpoints(verdicts, set_verdicts, endpoint),
        budget=training_budget(summary, experiment.get("held_equal")),
    )


def training_budget(summary: pd.DataFrame, held_equal: str | None) -> dict[str, Any]:
    """What the study held equal between its arms (``experiment.held_equal``), the optimiser steps each arm
    took (and its pretraining steps), and whether the arms took the same steps: a curve whose arms trained
    for different lengths mixes data with training length."""
    arms = summary.drop_duplicates("arm")
    steps = {
        row.arm: {
            "steps": None if pd.isna(row.steps) else int(row.steps),
            "steps_max": None if pd.isna(row.steps_max) else int(row.steps_max),
            "pretrain_steps": None if pd.isna(row.pretrain_steps) else int(row.pretrain_steps),
            "epochs": None if pd.isna(row.epochs) else float(row.epochs),
        }
        for row in arms.itertuples(index=False)
    }
    recorded = [
        value for arm in steps.values() for value in (arm["steps"], arm["steps_max"]) if value is not None
    ]
    return {
        "held_equal": held_equal,
        "arms": steps,
        "equal_steps": len(set(recorded)) <= 1 if recorded else None,
    }
