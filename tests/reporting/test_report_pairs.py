"""Which arms ``experiment.compare`` pairs, in one-key and crossed studies."""

from __future__ import annotations

from pathlib import Path

from cxrsyn.reporting.compare import pairs_to_compare
from cxrsyn.reporting.runs import Run, Study


def study(*arms: str) -> Study:
    return Study([Run(Path(arm), {"run": {"seed": 0}, "test_sets": {}}, arm=arm) for arm in arms])


def test_one_key_sides_pair_their_arms():
    s = study("data=synthetic_raw", "data=synthetic_cropped")
    assert pairs_to_compare(s, [["data=synthetic_cropped", "data=synthetic_raw"]]) == [
        ("data=synthetic_cropped", "data=synthetic_raw")
    ]


def test_a_crossed_study_pairs_arms_with_equal_other_overrides():
    arms = [
        f"data={d},mixing.k={k}"
        for d in ("mix_synthetic_real", "mix_real", "mix_real_repeated")
        for k in (25, 100)
    ]
    pairs = pairs_to_compare(study(*arms), [["data=mix_synthetic_real", "data=mix_real"]])
    assert pairs == [
        ("data=mix_synthetic_real,mixing.k=25", "data=mix_real,mixing.k=25"),
        ("data=mix_synthetic_real,mixing.k=100", "data=mix_real,mixing.k=100"),
    ]
    # a side may name several overrides; a side matching nothing is reported and every pair compared instead
    assert pairs_to_compare(study(*arms), [["data=mix_real,mixing.k=100", "data=mix_real,mixing.k=25"]]) == [
        ("data=mix_real,mixing.k=100", "data=mix_real,mixing.k=25")
    ]
    assert len(pairs_to_compare(study(*arms), [["data=nope", "data=mix_real"]])) == 15


def test_booleans_match_however_hydra_spells_them():
    arms = [f"pretrain.enabled={b},data.max_total={k}" for b in ("True", "False") for k in (25, 300)]
    assert pairs_to_compare(study(*arms), [["pretrain.enabled=true", "pretrain.enabled=false"]]) == [
        ("pretrain.enabled=True,data.max_total=25", "pretrain.enabled=False,data.max_total=25"),
        ("pretrain.enabled=True,data.max_total=300", "pretrain.enabled=False,data.max_total=300"),
    ]


def test_excluded_and_unfinished_jobs_are_told_apart(tmp_path):
    import json

    from cxrsyn.reporting.runs import find_runs

    for job in ("0", "1", "2"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
    run = {"run": {"seed": 0, "overrides": ["data=mix_synthetic_real", "mixing.k=0"]}, "test_sets": {}}
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(run))
    cell = ["data=mix_real", "mixing.k=0"]
    (tmp_path / "1" / "excluded.json").write_text(json.dumps({"cell": cell}))
    found = find_runs(tmp_path)
    assert [r.folder.name for r in found.runs] == ["0"]
    assert found.unfinished == ["2"] and found.excluded == {"1": cell}
