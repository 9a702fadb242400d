"""`python -m cxrsyn.readers make`: a balanced, shuffled study whose reader folder works offline and holds
nothing of the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cxrsyn.readers.order import reader_order
from tests.conftest import run_cli
from tests.readers.conftest import N_PER_SOURCE, make_overrides

pytestmark = pytest.mark.slow  # the study is made by `python -m cxrsyn.readers make` (a subprocess)


def page_study(reader_dir: Path) -> dict:
    html = (reader_dir / "index.html").read_text()
    match = re.search(r'<script id="study" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the page carries its case list"
    return json.loads(match.group(1))


def test_make_writes_a_reader_folder_and_a_balanced_key_kept_apart(reader_study):
    reader_dir = reader_study / "reader"
    assert sorted(path.name for path in reader_dir.iterdir()) == ["README.txt", "images", "index.html"]
    key = pd.read_csv(reader_study / "key" / "key.csv")
    assert (reader_study / "key" / "WARNING.txt").read_text().startswith("This folder holds the answer key")
    assert len(key) == 2 * N_PER_SOURCE and key["id"].is_unique
    counts = key.groupby(["source", "label"]).size()
    assert counts.to_dict() == {
        (s, label): N_PER_SOURCE // 2 for s in ("real", "synthetic") for label in (0, 1)
    }
    assert {"sex", "age_band", "projection"} <= set(
        key.columns
    )  # the synthetic set's attributes travel along
    images = sorted(path.stem for path in (reader_dir / "images").iterdir())
    assert images == sorted(key["id"])
    study = json.loads((reader_study / "study.json").read_text())
    assert study["seed"] == 0 and study["n_cases"] == 2 * N_PER_SOURCE
    assert (
        study["sources"]["synthetic"]["read"] == 16 and study["sources"]["real"]["selected"] == N_PER_SOURCE
    )


def test_nothing_in_the_reader_folder_reveals_the_key(reader_study):
    reader_dir = reader_study / "reader"
    key = pd.read_csv(reader_study / "key" / "key.csv")
    study = page_study(reader_dir)
    assert all(set(case) == {"id", "image"} for case in study["cases"])
    ids = [case["id"] for case in study["cases"]]
    assert ids == sorted(ids)  # listed by random id: not grouped by source or class
    embedded = json.dumps(study)
    for word in ("synthetic", "real", "pneumonia", "normal", "generator_like", "rsna_like", "phantom"):
        assert word not in embedded
    text = "\n".join(path.read_text() for path in (reader_dir.iterdir()) if path.is_file())
    for file in key["file"]:
        assert Path(file).name not in text and Path(file).stem not in text
    sizes = set()
    for path in (reader_dir / "images").iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "L"
            assert not {k: v for k, v in image.info.items() if k not in ("dpi",)}, f"metadata in {path.name}"
            sizes.add(image.size)
        raw = path.read_bytes()
        for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf"):
            assert chunk not in raw
    assert sizes == {(96, 96)}


def test_the_page_needs_no_network(reader_study):
    html = (reader_study / "reader" / "index.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and not re.search(r"<script[^>]+src=", html)
    assert "/*STYLE*/" not in html and "/*APP*/" not in html and "/*STUDY*/" not in html


def test_reader_order_is_a_seeded_permutation_per_reader():
    ids = [f"c{i:03d}" for i in range(40)]
    first = reader_order(ids, 0, "alice")
    assert sorted(first) == ids and first != ids
    assert reader_order(ids, 0, "alice") == first
    assert reader_order(ids, 0, "bob") != first and reader_order(ids, 1, "alice") != first


def test_make_rejects_an_odd_or_too_large_sample_in_one_line(phantom_data_dir, tmp_path):
    odd = run_cli("cxrsyn.readers", "make", *make_overrides(phantom_data_dir, tmp_path / "a", n_per_source=7))
    assert (
        odd.returncode == 2 and "n_per_source=7" in odd.stderr and len(odd.stderr.strip().splitlines()) == 1
    )
    big = run_cli(
        "cxrsyn.readers", "make", *make_overrides(phantom_data_dir, tmp_path / "b", n_per_source=40)
    )
    assert big.returncode == 2 and "lower n_per_source" in big.stderr.strip().splitlines()[-1]
    unknown = run_cli("cxrsyn.readers", "make", "reference=nope", f"out_dir={tmp_path / 'c'}")
    assert unknown.returncode == 2 and "no config 'nope' in group 'data'" in unknown.stderr


def test_make_checks_its_values_and_added_keys_in_one_line(phantom_data_dir, tmp_path):
    small = run_cli(
        "cxrsyn.readers", "make", *make_overrides(phantom_data_dir, tmp_path / "a", n_per_source=2)
    )
    assert (
        small.returncode == 2
        and "n_per_source=2" in small.stderr
        and len(small.stderr.strip().splitlines()) == 1
    )
    added = run_cli(
        "cxrsyn.readers", "make", *make_overrides(phantom_data_dir, tmp_path / "b"), "+n_per_sorce=10"
    )
    assert added.returncode == 2 and "n_per_sorce" in added.stderr
