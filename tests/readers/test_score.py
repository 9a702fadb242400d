"""`python -m cxrsyn.readers score`: the numbers equal those computed independently from the answers given
(scikit-learn, statsmodels, scipy), simulated readers run end to end, bad files are named in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from cxrsyn.core.errors import CxrsynError
from cxrsyn.readers.order import reader_order
from cxrsyn.readers.score import score, score_command
from cxrsyn.readers.simulate import answer_document
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # the study is made by `python -m cxrsyn.readers make` (a subprocess)


def answer_file(study_dir: Path, reader: str, answers: dict[str, dict], folder: Path, **changes) -> Path:
    """An answer file as the page exports it."""
    study = json.loads((study_dir / "study.json").read_text())
    key = pd.read_csv(study_dir / "key" / "key.csv")
    order = reader_order(sorted(key["id"]), study["seed"], reader)
    listed = [
        {"case": case, "position": i + 1, "comment": "", "seconds": 1.0, **answers[case]}
        for i, case in enumerate(order)
        if case in answers
    ]
    document = {**answer_document(study, reader, order, listed), **changes}
    path = folder / f"answers-{reader}.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def random_answers(key: pd.DataFrame, rng: np.random.Generator, skill: float) -> dict[str, dict]:
    """Answers that lean towards the truth by ``skill`` (a reader who sometimes sees the difference)."""
    answers = {}
    for row in key.itertuples():
        synthetic = row.source == "synthetic"
        says_synthetic = synthetic if rng.random() < skill else bool(rng.random() < 0.5)
        says_pneumonia = bool(row.label) if rng.random() < skill else bool(rng.random() < 0.5)
        answers[row.id] = {
            "origin": "synthetic" if says_synthetic else "real",
            "origin_confidence": int(rng.integers(1, 6)),
            "pneumonia": "yes" if says_pneumonia else "no",
            "pneumonia_confidence": int(rng.integers(1, 6)),
        }
    return answers


def ten_point(answers: dict[str, dict], ids: list[str], question: str, positive: str) -> np.ndarray:
    return np.array(
        [
            5 + answers[c][f"{question}_confidence"]
            if answers[c][question] == positive
            else 6 - answers[c][f"{question}_confidence"]
            for c in ids
        ]
    )


def test_scores_equal_those_computed_independently_from_the_answers(reader_study, tmp_path):
    key = pd.read_csv(reader_study / "key" / "key.csv").sort_values("id")
    rng = np.random.default_rng(3)
    given = {f"r{i}": random_answers(key, rng, skill) for i, skill in enumerate([0.3, 0.6, 0.8])}
    files = [
        answer_file(reader_study, reader, answers, tmp_path / "answers") for reader, answers in given.items()
    ]
    results = score(reader_study, files, tmp_path / "results", n_resamples=200, figures=False)

    ids = key["id"].tolist()
    synthetic = (key["source"] == "synthetic").to_numpy()
    labels = key["label"].to_numpy()
    aurocs = []
    for entry, (reader, answers) in zip(results["readers"], given.items(), strict=True):
        said = np.array([answers[c]["origin"] == "synthetic" for c in ids])
        correct = int((said == synthetic).sum())
        assert entry["reader"] == reader and not entry["partial"]
        assert entry["accuracy"] == pytest.approx(correct / len(ids))
        np.testing.assert_allclose(
            entry["accuracy_ci"], proportion_confint(correct, len(ids), method="wilson")
        )
        origin = ten_point(answers, ids, "origin", "synthetic")
        aurocs.append(roc_auc_score(synthetic, origin))
        assert entry["origin_auroc"]["auroc"] == pytest.approx(aurocs[-1])
        pneumonia = ten_point(answers, ids, "pneumonia", "yes")
        assert entry["pneumonia_auroc"]["synthetic"]["auroc"] == pytest.approx(
            roc_auc_score(labels[synthetic], pneumonia[synthetic])
        )
    pooled = results["pooled"]
    assert pooled["origin_auroc"]["fom"] == pytest.approx(np.mean(aurocs))
    assert pooled["origin_auroc"]["ci"][0] < np.mean(aurocs) < pooled["origin_auroc"]["ci"][1]
    said = np.array([[answers[c]["origin"] == "synthetic" for c in ids] for answers in given.values()])
    table = np.stack([said.sum(axis=0), (~said).sum(axis=0)], axis=1)
    assert pooled["kappa"]["kappa"] == pytest.approx(statsmodels_fleiss_kappa(table, method="fleiss"))
    assert pooled["accuracy"]["fom"] == pytest.approx((said == synthetic).mean())
    real_pneumonia = [
        roc_auc_score(labels[~synthetic], ten_point(a, ids, "pneumonia", "yes")[~synthetic])
        for a in given.values()
    ]
    assert pooled["pneumonia_auroc"]["real"]["fom"] == pytest.approx(np.mean(real_pneumonia))
    female = synthetic & (key["sex"] == "female").to_numpy()
    assert pooled["by_attribute"]["sex"]["female"]["called_synthetic"] == pytest.approx(
        said[:, female].mean()
    )
    assert "Obuchowski-Rockette" in (tmp_path / "results" / "results.md").read_text()


def test_bad_files_are_skipped_with_one_line_and_partial_readers_are_marked(reader_study, tmp_path):
    key = pd.read_csv(reader_study / "key" / "key.csv")
    rng = np.random.default_rng(0)
    folder = tmp_path / "answers"
    good = [answer_file(reader_study, f"ok{i}", random_answers(key, rng, 0.5), folder) for i in range(2)]
    partial_answers = dict(list(random_answers(key, rng, 0.5).items())[:5])
    partial = answer_file(reader_study, "partial", partial_answers, folder)
    not_json = folder / "broken.json"
    not_json.write_text('{"format": "cxrsyn-reader-answers", ')
    other_study = answer_file(reader_study, "other", random_answers(key, rng, 0.5), folder, study="0123abcd")
    bad = random_answers(key, rng, 0.5)
    bad[next(iter(bad))]["origin_confidence"] = 7
    bad_confidence = answer_file(reader_study, "bad", bad, folder)
    duplicate = answer_file(reader_study, "ok0", random_answers(key, rng, 0.5), folder / "again")
    files = [*good, partial, not_json, other_study, bad_confidence, duplicate]
    done = run_cli(
        "cxrsyn.readers", "score", str(reader_study), *map(str, files), "--out", str(tmp_path / "out")
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    lines = results["problems"]
    assert any(str(not_json) in line and "not a JSON answer file" in line for line in lines)
    assert any(str(other_study) in line and "not to this study" in line for line in lines)
    assert any(str(bad_confidence) in line and "origin_confidence=7" in line for line in lines)
    assert any(str(duplicate) in line and "already read" in line for line in lines)
    assert all("\n" not in line for line in lines) and len(lines) == 4
    assert results["partial_readers"] == ["partial"] and results["complete_readers"] == ["ok0", "ok1"]
    assert results["pooled"]["readers"] == 2
    entry = next(e for e in results["readers"] if e["reader"] == "partial")
    assert entry["partial"] and entry["answered"] == 5
    assert "| partial (partial) | 5 |" in (tmp_path / "out" / "results.md").read_text()
    for line in lines:
        assert line in done.stdout


def test_no_usable_file_stops_with_one_line(reader_study, tmp_path):
    broken = tmp_path / "x.json"
    broken.write_text("[]")
    with pytest.raises(CxrsynError, match="not a cxrsyn reader answer file") as raised:
        score_command([str(reader_study), str(broken), "--out", str(tmp_path / "o")])
    assert str(broken) in str(raised.value) and "\n" not in str(raised.value)


def test_simulated_readers_score_end_to_end(reader_study, tmp_path):
    done = run_cli(
        "cxrsyn.readers",
        "score",
        str(reader_study),
        "--simulate",
        "readers=4",
        "seed=1",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["simulated"] and results["complete_readers"] == ["sim01", "sim02", "sim03", "sim04"]
    assert not results["problems"]  # the simulated files follow the page's order and format
    assert (tmp_path / "figures" / "roc_curves.png").is_file()
    assert (tmp_path / "results.md").read_text().count("Simulated readers") == 1
