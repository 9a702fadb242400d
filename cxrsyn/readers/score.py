"""Score a reader study: read the exported answer files against the key, and write ``results.json``,
``results.md`` and ``figures/``.

Ratings: each question's answer and confidence make one 10-point scale (``simulate.rating``): 6..10 for
"synthetic" (or "pneumonia: yes") at confidence 1..5, 1..5 for "real" ("no") at confidence 5..1.

- Per reader: accuracy at telling synthetic from real (Wilson score CI), the share of synthetic cases called
  synthetic and of real cases called real, the AUROC of the 10-point rating (DeLong CI), and the pneumonia
  AUROC on all, real and synthetic cases. Partial readers (not every case answered) are reported on what they
  answered, marked partial, and left out of the pooled analyses, which need every reader on every case.
- Pooled over complete readers: the reader-averaged AUROC and accuracy with readers and cases random
  (``cxrsyn.readers.mrmc``: Obuchowski-Rockette, Hillis ddf, jackknife; the t test of AUROC = 0.5 and
  accuracy = 0.5: can readers tell them apart better than chance?), Fleiss' kappa of the real/synthetic answers
  (``cxrsyn.readers.agreement``), the pneumonia AUROC on synthetic and on real cases (each OR-Hillis on its
  own cases) and, on synthetic cases, by each prompt attribute value, with the share called synthetic.
- A file that cannot be used is skipped with one line naming it and what is wrong; nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import read_csv, save_figure, write_json, write_text
from cxrsyn.evaluation.agreement import WILSON, proportion_ci
from cxrsyn.evaluation.statistics import auroc_covariance
from cxrsyn.readers.agreement import category_counts, fleiss_kappa_ci
from cxrsyn.readers.make import KEY_DIR, KEY_FILE, STUDY_FILE
from cxrsyn.readers.mrmc import accuracy_jackknife, auroc_jackknife, obuchowski_rockette
from cxrsyn.readers.order import reader_order
from cxrsyn.readers.simulate import ReaderModel, rating, write_answer_files

FORMAT = "cxrsyn-reader-answers"
QUESTIONS = {"origin": ("synthetic", "real"), "pneumonia": ("yes", "no")}  # (positive, negative) answers
FIELDS = ("origin", "origin_confidence", "pneumonia", "pneumonia_confidence")
# key columns that describe the file or the generator's bookkeeping, not a prompted attribute of the image
NOT_PROMPT_ATTRIBUTES = {"id", "source", "set", "label", "file", "patient", "seed", "sha256", "width", "height",
                         "generator", "domain", "age"}  # fmt: skip
MAX_ATTRIBUTE_VALUES = 8
DELONG = "DeLong"


@dataclass
class ReaderAnswers:
    reader: str
    file: str
    answers: dict[str, dict[str, Any]]  # case id -> complete answer
    incomplete: int = 0  # cases with some but not all answers (left out)
    notes: list[str] = field(default_factory=list)


def score_command(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m cxrsyn.readers score")
    parser.add_argument("study", help="the study folder that `make` wrote (OUT)")
    parser.add_argument("answers", nargs="*", help="exported answer files (*.json)")
    parser.add_argument("--out", default=None, help="where to write (default: STUDY/results)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - CI level")
    parser.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples of the kappa CI")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument(
        "--simulate",
        nargs="+",
        metavar="KEY=VALUE",
        help="score simulated readers instead (e.g. readers=5 seed=0); answer files go to STUDY/simulated/",
    )
    args = parser.parse_args(argv)
    study_dir = Path(args.study)
    files = [Path(path) for path in args.answers]
    if args.simulate:
        model = ReaderModel.from_arguments(args.simulate)
        study, key = load_study(study_dir)
        files = write_answer_files(model, study, key, study_dir / "simulated")
        print(f"readers score: {len(files)} simulated readers ({model}) -> {study_dir / 'simulated'}")
    if not files:
        raise CxrsynError(
            "no answer files given; pass the exported answers (answers/*.json) or --simulate readers=5"
        )
    out_dir = Path(args.out) if args.out else study_dir / "results"
    return score(study_dir, files, out_dir, args.alpha, args.n_resamples, args.seed, not args.no_figures)


def load_study(study_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    study_file, key_file = study_dir / STUDY_FILE, study_dir / KEY_DIR / KEY_FILE
    for path in (study_file, key_file):
        if not path.is_file():
            raise CxrsynError(
                f"{path} is missing; pass the folder `python -m cxrsyn.readers make` wrote (out_dir)"
            )
    key = read_csv(key_file, dtype={"id": str})
    return json.loads(study_file.read_text()), key


# ------------------------------------------------------------------------------------------- reading answers
def read_answer_file(path: Path, study: dict[str, Any], case_ids: set[str]) -> ReaderAnswers:
    """One answer file, checked; raises ``CxrsynError`` with one line naming the file and the problem."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CxrsynError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CxrsynError(
            f"{path}: not a JSON answer file ({error}); export it again from the page"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CxrsynError(f"{path}: not a cxrsyn reader answer file (format is not {FORMAT!r})")
    if document.get("study") != study["study"]:
        raise CxrsynError(
            f"{path}: answers to study {document.get('study')!r}, not to this study {study['study']!r}; "
            "score it against the study folder it came from"
        )
    reader = document.get("reader")
    if not isinstance(reader, str) or not reader.strip():
        raise CxrsynError(f"{path}: no reader id")
    answers = document.get("answers")
    if not isinstance(answers, list):
        raise CxrsynError(f"{path}: 'answers' is not a list")
    result = ReaderAnswers(reader, str(path), {})
    for number, answer in enumerate(answers, start=1):
        where = f"{path}: answer {number}"
        if not isinstance(answer, dict):
            raise CxrsynError(f"{where} is not an object")
        case = answer.get("case")
        if case not in case_ids:
            raise CxrsynError(f"{where}: case {case!r} is not in this study")
        if case in result.answers:
            raise CxrsynError(f"{where}: case {case!r} answered twice")
        for question, allowed in QUESTIONS.items():
            value, confidence = answer.get(question), answer.get(f"{question}_confidence")
            if value is not None and value not in allowed:
                raise CxrsynError(f"{where}: {question}={value!r}; expected one of {', '.join(allowed)}")
            if confidence is not None and (
                isinstance(confidence, bool) or not isinstance(confidence, int) or not 1 <= confidence <= 5
            ):
                raise CxrsynError(f"{where}: {question}_confidence={confidence!r}; expected an integer 1-5")
        if all(answer.get(name) is not None for name in FIELDS):
            result.answers[case] = answer
        else:
            result.incomplete += 1
    expected = reader_order(sorted(case_ids), int(study["seed"]), reader)
    if document.get("order") != expected:
        result.notes.append("its case order is not the page's order for this reader id (file edited?)")
    return result


def read_answers(
    files: list[Path], study: dict[str, Any], key: pd.DataFrame
) -> tuple[list[ReaderAnswers], list[str]]:
    """The usable answer files and one line per file skipped or noted."""
    case_ids = set(key["id"])
    readers: list[ReaderAnswers] = []
    problems: list[str] = []
    for path in files:
        try:
            answers = read_answer_file(path, study, case_ids)
        except CxrsynError as error:
            problems.append(f"skipped {error}")
            continue
        if any(other.reader == answers.reader for other in readers):
            problems.append(f"skipped {path}: reader {answers.reader!r} already read from another file")
            continue
        if not answers.answers:
            problems.append(f"skipped {path}: reader {answers.reader!r} answered no case completely")
            continue
        readers.append(answers)
        problems.extend(f"note {path}: {note}" for note in answers.notes)
        if answers.incomplete:
            problems.append(f"note {path}: {answers.incomplete} case(s) only partly answered, left out")
    for line in problems:
        print(f"readers score: {line}")
    return readers, problems


# ------------------------------------------------------------------------------------------------- scoring
def ratings_of(answers: dict[str, dict[str, Any]], case_ids: list[str], question: str) -> np.ndarray:
    positive_answer = QUESTIONS[question][0]
    positive = np.array([answers[case][question] == positive_answer for case in case_ids])
    confidence = np.array([answers[case][f"{question}_confidence"] for case in case_ids])
    return rating(positive, confidence)


def auroc_with_ci(truth: np.ndarray, scores: np.ndarray, alpha: float) -> dict[str, Any]:
    """AUROC of one reader with DeLong's CI (None when a class has fewer than 2 cases)."""
    truth = np.asarray(truth).astype(bool)
    if truth.sum() < 2 or (~truth).sum() < 2:
        return {"auroc": None, "ci": None, "method": DELONG, "note": "fewer than 2 cases of a class"}
    from scipy.stats import norm

    aucs, covariance = auroc_covariance(truth, np.asarray(scores, np.float64)[None])
    se = float(np.sqrt(max(covariance[0, 0], 0.0)))
    half = float(norm.ppf(1 - alpha / 2)) * se
    return {
        "auroc": float(aucs[0]),
        "ci": [float(aucs[0] - half), float(aucs[0] + half)],
        "se": se,
        "method": DELONG,
    }


def reader_summary(answers: ReaderAnswers, key: pd.DataFrame, alpha: float) -> dict[str, Any]:
    cases = key[key["id"].isin(answers.answers)]
    ids = cases["id"].tolist()
    synthetic = (cases["source"] == "synthetic").to_numpy()
    origin = ratings_of(answers.answers, ids, "origin")
    called_synthetic = origin > 5
    correct = called_synthetic == synthetic
    pneumonia = ratings_of(answers.answers, ids, "pneumonia")
    labels = cases["label"].to_numpy().astype(bool)
    return {
        "reader": answers.reader,
        "file": answers.file,
        "answered": len(ids),
        "partial": len(ids) < len(key),
        "accuracy": float(correct.mean()),
        "accuracy_ci": proportion_ci(int(correct.sum()), len(ids), alpha),
        "accuracy_ci_method": WILSON,
        "synthetic_called_synthetic": float(called_synthetic[synthetic].mean()) if synthetic.any() else None,
        "real_called_real": float((~called_synthetic[~synthetic]).mean()) if (~synthetic).any() else None,
        "origin_auroc": auroc_with_ci(synthetic, origin, alpha),
        "pneumonia_auroc": {
            "all": auroc_with_ci(labels, pneumonia, alpha),
            "real": auroc_with_ci(labels[~synthetic], pneumonia[~synthetic], alpha),
            "synthetic": auroc_with_ci(labels[synthetic], pneumonia[synthetic], alpha),
        },
    }


def pooled_auroc(scores: np.ndarray, truth: np.ndarray, alpha: float) -> dict[str, Any]:
    """Reader-averaged AUROC of readers x cases scores, OR-Hillis (test of 0.5); None with a reason when a
    class has fewer than 2 cases."""
    truth = np.asarray(truth).astype(bool)
    if truth.sum() < 2 or (~truth).sum() < 2:
        return {"fom": None, "note": f"{int(truth.sum())} positive and {int((~truth).sum())} negative cases"}
    foms, left_out = auroc_jackknife(scores, truth)
    analysis = obuchowski_rockette(foms, left_out, alpha, null_value=0.5)
    return {**analysis["single"]["0"], "cases": int(len(truth)), "readers": int(len(scores))}


def score(
    study_dir: Path,
    files: list[Path],
    out_dir: Path,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
    figures: bool = True,
) -> dict[str, Any]:
    study, key = load_study(study_dir)
    key = key.sort_values("id").reset_index(drop=True)
    readers, problems = read_answers(files, study, key)
    if not readers:
        raise CxrsynError(f"none of the {len(files)} answer files could be used: {'; '.join(problems)}")
    per_reader = [reader_summary(answers, key, alpha) for answers in readers]
    complete = [answers for answers in readers if len(answers.answers) == len(key)]
    results: dict[str, Any] = {
        "study": study["study"],
        "study_dir": str(study_dir),
        "cases": len(key),
        "counts": study["counts"],
        "files": [str(path) for path in files],
        "problems": problems,
        "readers": per_reader,
        "complete_readers": [answers.reader for answers in complete],
        "partial_readers": [answers.reader for answers in readers if len(answers.answers) < len(key)],
        "alpha": alpha,
        "rating_scale": "10 points: 6..10 = synthetic (pneumonia yes) at confidence 1..5, "
        "1..5 = real (pneumonia no) at confidence 5..1",
        "simulated": _simulated(files),
    }
    if complete:
        results["pooled"] = pooled(complete, key, alpha, n_resamples, seed)
    else:
        results["pooled"] = {"note": "no reader answered every case: pooled analyses need complete readers"}
    out_dir.mkdir(parents=True, exist_ok=True)
    if figures and complete:
        results["figures"] = write_figures(complete, key, out_dir / "figures")
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "results.md", markdown(results))
    print(markdown_summary(results))
    print(f"readers score: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    return results


def _simulated(files: list[Path]) -> bool:
    try:
        return all("simulated" in json.loads(Path(path).read_text()) for path in files)
    except (OSError, ValueError):
        return False


def pooled(
    readers: list[ReaderAnswers], key: pd.DataFrame, alpha: float, n_resamples: int, seed: int
) -> dict[str, Any]:
    ids = key["id"].tolist()
    synthetic = (key["source"] == "synthetic").to_numpy()
    labels = key["label"].to_numpy().astype(bool)
    origin = np.stack([ratings_of(answers.answers, ids, "origin") for answers in readers])
    pneumonia = np.stack([ratings_of(answers.answers, ids, "pneumonia") for answers in readers])
    correct = (origin > 5) == synthetic[None]
    accuracy, accuracy_left_out = accuracy_jackknife(correct)
    accuracy_analysis = obuchowski_rockette(accuracy, accuracy_left_out, alpha, null_value=0.5)["single"]["0"]
    result: dict[str, Any] = {
        "readers": len(readers),
        "origin_auroc": pooled_auroc(origin, synthetic, alpha),
        "accuracy": accuracy_analysis,
        "kappa": fleiss_kappa_ci(category_counts(origin > 5, [True, False]), alpha, n_resamples, seed),
        "pneumonia_auroc": {
            "all": pooled_auroc(pneumonia, labels, alpha),
            "real": pooled_auroc(pneumonia[:, ~synthetic], labels[~synthetic], alpha),
            "synthetic": pooled_auroc(pneumonia[:, synthetic], labels[synthetic], alpha),
        },
        "by_attribute": {},
    }
    for attribute in prompt_attributes(key[synthetic]):
        # missing values (a column only some generators record) are not a value of the attribute
        values = np.array([str(v) if pd.notna(v) else "" for v in key[attribute]], dtype=object)
        entries = {}
        for value in sorted(set(values[synthetic]) - {""}):
            cases = synthetic & (values == value)
            entries[value] = {
                "cases": int(cases.sum()),
                "called_synthetic": float((origin[:, cases] > 5).mean()),
                "pneumonia_auroc": pooled_auroc(pneumonia[:, cases], labels[cases], alpha),
            }
        result["by_attribute"][attribute] = entries
    return result


def prompt_attributes(synthetic_key: pd.DataFrame) -> list[str]:
    """Key columns that look like prompted attributes: not bookkeeping, 2..8 distinct values."""
    columns = []
    for column in synthetic_key.columns:
        if column in NOT_PROMPT_ATTRIBUTES:
            continue
        distinct = synthetic_key[column].dropna().astype(str).nunique()
        if 2 <= distinct <= MAX_ATTRIBUTE_VALUES:
            columns.append(column)
    return columns


# ------------------------------------------------------------------------------------------------ writing
def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(values: list[float] | None) -> str:
    return "n/a" if not values else f"{values[0]:.3f}-{values[1]:.3f}"


def markdown(results: dict[str, Any]) -> str:
    level = round(100 * (1 - results["alpha"]))
    lines = [f"# Reader study {results['study']}: results", ""]
    if results.get("simulated"):
        lines += [
            "**Simulated readers** (cxrsyn/readers/simulate.py): a check of the analysis, not evidence.",
            "",
        ]
    lines += [
        f"{results['cases']} cases; {len(results['readers'])} readers read "
        f"({len(results['complete_readers'])} complete, {len(results['partial_readers'])} partial: "
        f"{', '.join(results['partial_readers']) or 'none'}). Ratings: {results['rating_scale']}.",
        "",
    ]
    if results["problems"]:
        lines += ["Answer files:", ""] + [f"- {line}" for line in results["problems"]] + [""]
    lines += [
        "## Telling synthetic from real, per reader",
        "",
        f"| reader | answered | accuracy ({level}% CI, Wilson) | synthetic called synthetic | real called real "
        f"| AUROC ({level}% CI, DeLong) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results["readers"]:
        auroc = entry["origin_auroc"]
        lines.append(
            f"| {entry['reader']}{' (partial)' if entry['partial'] else ''} | {entry['answered']} "
            f"| {_fmt(entry['accuracy'])} ({_interval(entry['accuracy_ci'])}) "
            f"| {_fmt(entry['synthetic_called_synthetic'])} | {_fmt(entry['real_called_real'])} "
            f"| {_fmt(auroc['auroc'])} ({_interval(auroc['ci'])}) |"
        )
    pooled_results = results["pooled"]
    if "origin_auroc" not in pooled_results:
        return "\n".join([*lines, "", pooled_results["note"], ""])
    auroc, accuracy, kappa = (
        pooled_results["origin_auroc"],
        pooled_results["accuracy"],
        pooled_results["kappa"],
    )
    lines += [
        "",
        f"## Pooled over the {pooled_results['readers']} complete readers (readers and cases random)",
        "",
        f"| measure | estimate | {level}% CI | test of chance (0.5) | method |",
        "|---|---|---|---|---|",
        f"| reader-averaged AUROC, synthetic vs real | {_fmt(auroc['fom'])} | {_interval(auroc.get('ci'))} "
        f"| t = {_fmt(auroc.get('t'), 2)}, df = {_fmt(auroc.get('ddf'), 1)}, p = {_fmt(auroc.get('p_value'), 4)} "
        f"| {auroc.get('method', 'n/a')} |",
        f"| reader-averaged accuracy | {_fmt(accuracy['fom'])} | {_interval(accuracy.get('ci'))} "
        f"| t = {_fmt(accuracy.get('t'), 2)}, df = {_fmt(accuracy.get('ddf'), 1)}, "
        f"p = {_fmt(accuracy.get('p_value'), 4)} | {accuracy.get('method', 'n/a')} |",
        f"| Fleiss' kappa (real/synthetic answers) | {_fmt(kappa['kappa'])} | {_interval(kappa['ci'])} | | "
        f"{kappa['ci_method']} |",
        "",
        "## Do readers see pneumonia? Reader-averaged pneumonia AUROC",
        "",
        f"| cases | n | AUROC | {level}% CI | method |",
        "|---|---|---|---|---|",
    ]
    for name, entry in pooled_results["pneumonia_auroc"].items():
        lines.append(
            f"| {name} | {entry.get('cases', 'n/a')} | {_fmt(entry.get('fom'))} | {_interval(entry.get('ci'))} "
            f"| {entry.get('method', entry.get('note', ''))} |"
        )
    if pooled_results["by_attribute"]:
        lines += [
            "",
            "## Synthetic cases by prompt attribute",
            "",
            f"| attribute | value | cases | called synthetic | pneumonia AUROC ({level}% CI) |",
            "|---|---|---|---|---|",
        ]
        for attribute, values in pooled_results["by_attribute"].items():
            for value, entry in values.items():
                pneumonia = entry["pneumonia_auroc"]
                lines.append(
                    f"| {attribute} | {value} | {entry['cases']} | {_fmt(entry['called_synthetic'])} "
                    f"| {_fmt(pneumonia.get('fom'))} ({_interval(pneumonia.get('ci'))}) |"
                )
    return "\n".join([*lines, ""])


def markdown_summary(results: dict[str, Any]) -> str:
    pooled_results = results["pooled"]
    if "origin_auroc" not in pooled_results:
        return f"readers score: {len(results['readers'])} readers, {pooled_results['note']}"
    auroc = pooled_results["origin_auroc"]
    return (
        f"readers score: {pooled_results['readers']} complete readers, reader-averaged AUROC synthetic vs real "
        f"{_fmt(auroc['fom'])} ({_interval(auroc.get('ci'))}, p = {_fmt(auroc.get('p_value'), 4)} against 0.5), "
        f"accuracy {_fmt(pooled_results['accuracy']['fom'])}, Fleiss' kappa {_fmt(pooled_results['kappa']['kappa'])}"
    )


def write_figures(readers: list[ReaderAnswers], key: pd.DataFrame, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    ids = key["id"].tolist()
    synthetic = (key["source"] == "synthetic").to_numpy()
    labels = key["label"].to_numpy().astype(bool)
    written = {}
    figure = Figure(figsize=(9, 4.2))
    for axis, question, truth, title in (
        (figure.add_subplot(1, 2, 1), "origin", synthetic, "synthetic vs real"),
        (figure.add_subplot(1, 2, 2), "pneumonia", labels, "pneumonia (all cases)"),
    ):
        for answers in readers:
            scores = ratings_of(answers.answers, ids, question)
            fpr, tpr = _roc_points(truth, scores)
            axis.plot(fpr, tpr, marker="o", markersize=3, label=answers.reader)
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axis.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, aspect="equal")
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    path = save_figure(figure, folder / "roc_curves.png")
    written["roc_curves"] = str(path)
    return written


def _roc_points(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ROC operating points of a rating scale (one per threshold, plus the corners)."""
    thresholds = np.unique(scores)[::-1]
    tpr = [0.0] + [float((scores[truth] >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((scores[~truth] >= t).mean()) for t in thresholds]
    return np.array(fpr), np.array(tpr)
