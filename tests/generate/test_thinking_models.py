"""Gemini 3 image models think: interim "thought" images come before the final one, and thinking is billed."""

from __future__ import annotations

import hashlib
import json

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.generate.test_nano_banana import compose, overrides

THOUGHTS = 480  # the fake's thoughtsTokenCount per reply


@pytest.mark.parametrize("return_thoughts", [True, False], ids=["drafts-returned", "drafts-withheld"])
def test_the_final_image_is_kept_not_a_draft_and_thinking_is_recorded(tmp_path, key, return_thoughts):
    with FakeGemini(return_thoughts=return_thoughts) as server:
        args = overrides(server, tmp_path, 2, generator="nano_banana_2")
        summary = generate(compose(args))
        assert server.drafts_served == (2 * 4 if return_thoughts else 0)
    table = read_manifest(tmp_path)
    for row in table.itertuples():
        # the stored image is the one final image the server generated for this prompt, never a draft
        assert server.served_images[row.prompt] == [row.sha256]
        assert hashlib.sha256((tmp_path / row.path).read_bytes()).hexdigest() == row.sha256
    assert set(table["thought_images"]) == {2 if return_thoughts else 0}
    assert set(table["usage_thoughts_token_count"]) == {THOUGHTS}
    assert set(table["usage_image_token_count"]) == {1120}
    assert (table["usage_prompt_token_count"] > 0).all()
    # the run's spend counts the thinking, at the table's $3 per million thinking tokens
    spend = summary["spend_this_run"]
    assert spend["images"] == 4 and spend["thoughts_tokens"] == 4 * THOUGHTS
    assert spend["thought_images"] == (8 if return_thoughts else 0)
    assert spend["usd"]["thinking"] == pytest.approx(4 * THOUGHTS * 3.0 / 1e6)
    assert spend["usd"]["images"] == pytest.approx(4 * 0.067)
    assert spend["total_usd"] == pytest.approx(sum(spend["usd"].values()), abs=1e-4)
    assert json.loads((tmp_path / "generation.json").read_text())["spend_this_run"] == spend


def test_a_reply_with_only_drafts_has_no_image_and_is_asked_again(tmp_path, key):
    with FakeGemini(["drafts-only"]) as server:
        generate(
            compose(overrides(server, tmp_path, 1, generator="nano_banana_2", **{"generator.concurrency": 1}))
        )
    attempts = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["reason"]) for a in attempts] == [
        ("no_image", "only 2 draft (thought) image(s), no final image")
    ]
    table = read_manifest(tmp_path)
    assert len(table) == 2 and all(
        server.served_images[p] == [s] for p, s in zip(table.prompt, table.sha256, strict=True)
    )


def test_a_thinking_model_estimate_includes_thinking(tmp_path):
    with FakeGemini() as server:
        pro = generate(
            compose([*overrides(server, tmp_path / "pro", 5, generator="nano_banana_pro"), "dry_run=true"])
        )
        assert server.paths == {}
    assert pro["usd_per_image"] == {"image": 0.134, "thinking": pytest.approx(1000 * 12.0 / 1e6)}
    assert pro["assumed_thinking_tokens_per_image"] == 1000
    assert pro["estimated_cost_usd"] == pytest.approx(10 * (0.134 + 0.012) + pro["prompt_usd"], abs=1e-4)
    assert pro["prices_as_of"] == "2026-11" and pro["price_source"] == "conf/prices/gemini.yaml"


def test_a_run_that_stops_still_records_what_it_spent(tmp_path, key):
    with FakeGemini(["ok", "403"]) as server:
        args = overrides(server, tmp_path, 2, generator="nano_banana_2", **{"generator.concurrency": 1})
        with pytest.raises(CxrsynError, match="HTTP 403"):
            generate(compose(args))
    summary = json.loads((tmp_path / "generation.json").read_text())
    assert summary["status"] == "stopped" and "HTTP 403" in summary["stopped_because"]
    assert summary["kept"] == 1 and summary["spend_this_run"]["thoughts_tokens"] == THOUGHTS
    assert len(read_manifest(tmp_path)) == 1
