"""Quotas and retries as the real service answers them: a key without billing for an image model gets a 429
whose QuotaFailure has limit 0 (retrying never helps), and 429/503 replies say how long to wait (RetryInfo)."""

from __future__ import annotations

import json

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.generate.test_nano_banana import compose, overrides


def generate_requests(server: FakeGemini) -> list[dict]:
    return [entry for entry in server.requests if entry["kind"] == "generate"]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_key_without_billing_stops_after_one_request_per_worker(tmp_path, key, concurrency):
    with FakeGemini(["429-no-quota"] * 100) as server:  # every request would get the same answer
        args = overrides(server, tmp_path, 10, **{"generator.concurrency": concurrency})
        with pytest.raises(CxrsynError) as raised:
            generate(compose(args))
        assert 1 <= len(generate_requests(server)) <= concurrency
    message = str(raised.value)
    assert "\n" not in message
    assert (
        "billing must be enabled for this key and model" in message and "'gemini-2.5-flash-image'" in message
    )
    assert "limit of 0" in message and "GenerateRequestsPerDayPerProjectPerModel-FreeTier" in message
    summary = json.loads((tmp_path / "generation.json").read_text())
    assert summary["status"] == "stopped" and summary["kept"] == 0


def test_a_retry_waits_at_least_the_delay_the_server_asked(tmp_path, key):
    # the blind schedule would wait about 1 ms here; the server asks for 0.2 s twice (a 429, then a 503)
    with FakeGemini(["429", "503"], retry_delay="0.2s") as server:
        extra = {
            "generator.concurrency": 1,
            "generator.backoff_initial_s": 0.001,
            "generator.backoff_max_s": 0.002,
        }
        generate(compose(overrides(server, tmp_path, 1, **extra)))
        times = [entry["time"] for entry in generate_requests(server)]
    assert len(times) == 4  # 429, 503, then the image; then the second image
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.2
    retries = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["code"], r["retry_delay_s"]) for r in retries] == [
        ("retry", 429, 0.2),
        ("retry", 503, 0.2),
    ]


def test_without_a_server_delay_the_backoff_schedule_applies(tmp_path, key):
    with FakeGemini(["503"]) as server:
        extra = {
            "generator.concurrency": 1,
            "generator.backoff_initial_s": 0.001,
            "generator.backoff_max_s": 0.002,
        }
        generate(compose(overrides(server, tmp_path, 1, **extra)))
    (retry,) = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert retry["kind"] == "retry" and retry["retry_delay_s"] is None


def test_a_server_delay_longer_than_allowed_stops_the_run(tmp_path, key):
    with FakeGemini(["429"] * 10, retry_delay="3600s") as server:
        args = overrides(
            server, tmp_path, 2, **{"generator.concurrency": 1, "generator.max_retry_delay_s": 60}
        )
        with pytest.raises(
            CxrsynError, match="asked to wait 3600 s .*max_retry_delay_s=60.*rerun the same command later"
        ):
            generate(compose(args))
        assert len(generate_requests(server)) == 1
