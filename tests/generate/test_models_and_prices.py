"""Models that exist today, any model id, and one price table with its source and date."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.cost import cost_table
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.conftest import REPO_ROOT
from tests.generate.test_nano_banana import compose, overrides

UNLISTED = "gemini-9-flash-image-preview"  # a model id the price table does not know


def test_the_generate_default_is_a_served_model_and_nano_banana_stays_the_papers():
    assert compose([]).generator.model == "gemini-3.1-flash-image"  # nano_banana_2, served today
    assert compose(["generator=nano_banana"]).generator.model == "gemini-2.5-flash-image"  # the paper's


def test_a_model_without_a_price_is_refused_before_any_request(tmp_path, key, capsys):
    with FakeGemini() as server:
        args = overrides(server, tmp_path / "a", 2, **{"generator.model": UNLISTED})
        with pytest.raises(CxrsynError) as raised:
            generate(compose(args))
        assert server.paths == {}  # nothing sent, nothing paid
        message = str(raised.value)
        assert "\n" not in message and UNLISTED in message and "generator.price_per_image_usd=" in message
        assert "conf/prices/gemini.yaml" in message
        # a dry run says the same and shows an unknown cost, never a zero
        estimate = generate(compose([*args, "dry_run=true"]))
        assert estimate["estimated_cost_usd"] is None and estimate["prices_as_of"] == "2026-11"
        assert "generator.price_per_image_usd" in capsys.readouterr().out


def test_any_model_id_runs_with_an_explicit_price(tmp_path, key):
    with FakeGemini() as server:
        args = overrides(
            server, tmp_path, 2, **{"generator.model": UNLISTED, "generator.price_per_image_usd": 0.05}
        )
        summary = generate(compose(args))
        (path,) = server.paths
        assert path.endswith(f"/models/{UNLISTED}:generateContent") and server.paths[path] == 4
    estimate = summary["estimate_this_run"]
    assert estimate["estimated_cost_usd"] == pytest.approx(4 * 0.05)
    assert (
        estimate["price_source"] == "generator.price_per_image_usd" and estimate["prices_as_of"] == "2026-11"
    )
    assert summary["spend_this_run"]["total_usd"] == pytest.approx(4 * 0.05)
    assert set(read_manifest(tmp_path)["model"]) == {UNLISTED}


def test_the_price_table_is_one_file_with_its_source():
    generate_yaml = yaml.safe_load((REPO_ROOT / "conf" / "generate.yaml").read_text())
    assert "prices" not in generate_yaml  # one home: conf/prices/gemini.yaml
    prices = compose([]).prices
    assert prices.as_of == "2026-11" and prices.source.startswith("https://ai.google.dev/")
    for name in ("nano_banana", "nano_banana_2", "nano_banana_pro"):
        generator = compose([f"generator={name}"]).generator
        sizes = prices.models[generator.model].usd_per_image
        assert "default" in sizes and all(str(size) in sizes for size in generator.image_sizes or [])


def test_the_docs_cost_table_is_computed_from_the_price_table():
    """docs/generating.md's table of what 300 images cost matches conf/prices/gemini.yaml, row by row."""
    text = (REPO_ROOT / "docs" / "generating.md").read_text()
    prices = yaml.safe_load((REPO_ROOT / "conf" / "prices" / "gemini.yaml").read_text())
    rows = cost_table(prices, 300)
    assert len(rows) == 8
    for row in rows:
        size = "one size" if row["image_size"] == "default" else row["image_size"]
        pattern = (
            rf"\| `{re.escape(row['model'])}` \| {re.escape(size)} \| [^|]*\| \${row['online_usd']:.2f} \| "
            rf"\${row['batch_usd']:.2f} \|"
        )
        assert re.search(pattern, text), f"docs/generating.md lacks the row {pattern}"
    assert f"as of {prices['as_of']}" in text and prices["source"] in text


def test_every_estimate_carries_prices_as_of(tmp_path):
    for generator in ("nano_banana", "nano_banana_2", "phantom"):
        estimate = generate(
            compose([f"generator={generator}", f"out_dir={tmp_path / generator}", "dry_run=true"])
        )
        assert estimate["prices_as_of"] == "2026-11", generator
    summary = json.loads(json.dumps(estimate))
    assert summary["estimated_cost_usd"] == 0.0  # the phantom costs nothing
