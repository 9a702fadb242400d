"""Nano Banana generation through the real google-genai client against a local server that speaks the
Gemini wire format and injects faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cxrsyn.data.manifest import read_manifest, sha256_of_file
from cxrsyn.errors import CxrsynError
from cxrsyn.generate.fake_gemini import FakeGemini
from cxrsyn.generate.run import generate
from tests.conftest import REPO_ROOT, compose_config, run_cli

KEY = "AIza-test-key-0123456789-do-not-leak"


def overrides(server: FakeGemini, out_dir: Path, n_per_class: int, **extra: object) -> list[str]:
    values = {
        "generator": "nano_banana",
        "out_dir": out_dir,
        "generator.n_per_class": n_per_class,
        "generator.base_url": server.url,
        "generator.timeout_s": 1,
        "generator.backoff_initial_s": 0.02,
        "generator.backoff_max_s": 0.1,
        "generator.concurrency": 3,
        "generator.show_progress": False,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def compose(args: list[str]):
    return compose_config("generate", args)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return KEY


def assert_complete(out_dir: Path, n_per_class: int) -> pd.DataFrame:
    table = read_manifest(out_dir)
    assert len(table) == 2 * n_per_class
    assert (table["label"] == 1).sum() == n_per_class
    assert (table["label"] == table["request_id"].str.startswith("pneumonia").astype(int)).all()
    assert table["request_id"].is_unique and table["sha256"].is_unique  # no image kept twice
    for path, sha in table[["path", "sha256"]].itertuples(index=False):
        assert sha256_of_file(out_dir / path) == sha
    assert {"prompt", "model", "generator", "seed", "timestamp", "usage_total_token_count", "finding"} <= set(
        table
    )
    return table


def test_faults_are_retried_and_every_image_arrives_once(tmp_path):
    script = ["429", "429", "429", "500", "503", "503", "500-html", "slow", "no-image", "safety", "blocked"]
    with FakeGemini(script, slow_s=2.0) as server:
        out, run = tmp_path / "out", tmp_path / "run"
        env = {**os.environ, "GEMINI_API_KEY": KEY}
        result = run_cli("cxrsyn.generate", *overrides(server, out, 6), f"hydra.run.dir={run}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.api_keys == {KEY}  # the real client sent the key in its header
    assert_complete(out, 6)
    attempts = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    kinds = [a["kind"] for a in attempts]
    assert kinds.count("retry") == 8  # 3x429, 500, 2x503, the non-JSON 500, the timeout
    assert kinds.count("no_image") == 3 and "failed" not in kinds
    reasons = " ".join(a["reason"] for a in attempts)
    for fragment in (
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "Timeout",
        "NO_IMAGE",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
    ):
        assert fragment in reasons
    assert "retried 8, no-image replies 3, failed 0" in result.stdout
    summary = json.loads((out / "generation.json").read_text())
    assert summary["kept"] == 12 and summary["missing"] == []
    for folder in (out, run):  # the key reaches no file
        for path in folder.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path


def test_no_image_cap_then_rerun_completes(tmp_path, key):
    with FakeGemini(["safety"] * 3) as server:
        args = overrides(server, tmp_path, 1, **{"generator.max_no_image": 2, "generator.concurrency": 1})
        with pytest.raises(CxrsynError, match="1 image\\(s\\) still missing .*rerun the same command"):
            generate(compose(args))
        assert len(read_manifest(tmp_path)) == 1
        served_before = server.images_served
        summary = generate(compose(args))
    assert summary["made_this_run"] == 1 and summary["kept"] == 2
    assert server.images_served == served_before + 1  # the kept image was not asked for again
    assert_complete(tmp_path, 1)


def test_permission_error_stops_at_once(tmp_path, key):
    with FakeGemini(["403"]) as server:
        with pytest.raises(CxrsynError, match="HTTP 403 .*check the key"):
            generate(compose(overrides(server, tmp_path, 3, **{"generator.concurrency": 1})))
        assert server.served["ok"] == 0


def test_missing_key_and_dry_run(tmp_path, monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with FakeGemini() as server:
        with pytest.raises(CxrsynError, match="no Gemini API key: set GEMINI_API_KEY"):
            generate(compose(overrides(server, tmp_path / "a", 2)))
        result = run_cli(
            "cxrsyn.generate",
            *overrides(server, tmp_path / "b", 2),
            "dry_run=true",
            f"hydra.run.dir={tmp_path}/r",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert server.paths == {}  # nothing was sent
    lines = result.stdout.strip().splitlines()
    assert sum(line.startswith(("pneumonia-", "normal-")) for line in lines) == 4
    assert "4 to make; paid calls: 4 generate_content calls" in lines[-1]
    assert not (tmp_path / "b" / "images").exists()


def test_changed_prompts_do_not_mix_into_an_existing_folder(tmp_path, key):
    with FakeGemini() as server:
        generate(compose(overrides(server, tmp_path, 1)))
        changed = overrides(
            server, tmp_path, 1, **{"generator.prompt_template": "'{age} year old {sex}. {finding}'"}
        )
        with pytest.raises(CxrsynError, match="made from a different prompt"):
            generate(compose(changed))


@pytest.mark.slow
def test_sigkill_midway_then_rerun_pays_only_for_what_is_missing(tmp_path):
    n_per_class, concurrency = 12, 4
    with FakeGemini(latency_s=0.3) as server:
        out, run = tmp_path / "out", tmp_path / "run"
        args = overrides(server, out, n_per_class, **{"generator.concurrency": concurrency})
        command = [sys.executable, "-m", "cxrsyn.generate", *args, f"hydra.run.dir={run}"]
        env = {**os.environ, "GEMINI_API_KEY": KEY}
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while (
            len(list((out / "records").glob("*.json"))) < 6
            and process.poll() is None
            and time.time() < deadline
        ):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "finished before it could be killed"
        served_at_kill = server.images_served
        assert served_at_kill < 2 * n_per_class
        assert not (out / "manifest.csv").exists() or len(read_manifest(out)) < 2 * n_per_class

        result = run_cli("cxrsyn.generate", *args, f"hydra.run.dir={run}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    table = assert_complete(out, n_per_class)
    # every image served was kept, except those in flight when the process died
    assert server.images_served <= len(table) + concurrency
    assert not list((out / "images").glob(".*.tmp"))
