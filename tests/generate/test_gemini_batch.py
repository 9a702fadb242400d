"""Gemini batch mode through the real client's ``batches`` API: submit, poll, collect, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.conftest import REPO_ROOT, run_cli
from tests.generate.test_nano_banana import KEY, assert_complete, compose, overrides


def batch_overrides(server, out_dir, n_per_class, **extra):
    return overrides(
        server,
        out_dir,
        n_per_class,
        **{"generator.batch": True, "generator.batch_poll_s": 0.05, "generator.batch_size": 4, **extra},
    )


def test_batch_collects_and_reasks_only_what_had_no_image(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGemini(["safety", "500"], batch_polls=2) as server:
        args = batch_overrides(server, tmp_path, 3)
        with pytest.raises(CxrsynError, match="2 image\\(s\\) still missing"):
            generate(compose(args))
        assert len(server.batch_jobs) == 2  # 6 requests in jobs of 4
        jobs = json.loads((tmp_path / "batch_jobs.json").read_text())
        assert all(job["collected"] for job in jobs)
        generate(compose(args))
        assert len(server.batch_jobs) == 3 and len(server.batch_jobs["batches/fake-3"]["keys"]) == 2
    table = assert_complete(tmp_path, 3)
    assert table["batch_job"].str.startswith("batches/fake-").all()
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert sorted(kinds) == ["failed", "no_image"]


@pytest.mark.slow
def test_killed_while_polling_resumes_without_submitting_again(tmp_path):
    with FakeGemini(batch_polls=10**6) as server:  # jobs run "forever" until the test releases them
        out, run = tmp_path / "out", tmp_path / "run"
        args = batch_overrides(server, out, 4)
        env = {**os.environ, "GEMINI_API_KEY": KEY}
        command = [sys.executable, "-m", "cxrsyn.generate", *args, f"hydra.run.dir={run}"]
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        jobs_file = out / "batch_jobs.json"
        deadline = time.time() + 120
        while (
            not jobs_file.exists() or len(json.loads(jobs_file.read_text())) < 2
        ) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # it is polling now
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert len(server.batch_jobs) == 2 and server.images_served == 0
        for job in server.batch_jobs.values():
            job["polls_left"] = 0
        result = run_cli("cxrsyn.generate", *args, f"hydra.run.dir={run}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(server.batch_jobs) == 2  # nothing submitted twice
        assert server.images_served == 8
    assert_complete(out, 4)


def test_file_results_are_collected_and_missing_keys_reasked_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGemini(["missing"], batch_results="file") as server:
        args = batch_overrides(server, tmp_path, 3)  # 6 requests in jobs of 4 and 2
        with pytest.raises(CxrsynError, match="1 image\\(s\\) still missing"):
            generate(compose(args))
        assert server.downloads == 2 and len(server.batch_jobs) == 2
        dropped = server.batch_jobs["batches/fake-1"]["keys"][0]
        jobs = json.loads((tmp_path / "batch_jobs.json").read_text())
        assert jobs[0]["missing"] == [dropped] and not jobs[0]["collected"] and jobs[1]["collected"]
        attempts = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
        assert [(attempt["kind"], attempt["id"]) for attempt in attempts] == [("missing", dropped)]
        assert len(read_manifest(tmp_path)) == 5  # every result in the files was kept
        generate(compose(args))
        assert len(server.batch_jobs) == 3 and server.batch_jobs["batches/fake-3"]["keys"] == [dropped]
        assert server.images_served == 6  # nothing paid twice
    assert all(job["collected"] for job in json.loads((tmp_path / "batch_jobs.json").read_text()))
    table = assert_complete(tmp_path, 3)
    assert set(table["model_version"]) == {"gemini-2.5-flash-image-fake-001"}


def test_a_results_file_that_fails_to_download_is_read_again_not_paid_again(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGemini(batch_results="file", download_failures=1) as server:
        args = batch_overrides(server, tmp_path, 1)
        with pytest.raises(CxrsynError, match="2 image\\(s\\) still missing"):
            generate(compose(args))
        (job,) = json.loads((tmp_path / "batch_jobs.json").read_text())
        assert not job.get("collected") and "missing" not in job
        generate(compose(args))
        assert len(server.batch_jobs) == 1 and server.downloads == 1 and server.images_served == 2
    assert_complete(tmp_path, 1)


def test_the_estimate_comes_before_the_first_request_and_a_retired_model_stops(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGemini() as server:
        args = batch_overrides(
            server, tmp_path / "nb2", 2, generator="nano_banana_2", **{"generator.image_size": "2K"}
        )
        dry = generate(compose([*args, "dry_run=true"]))
        capsys.readouterr()
        generate(compose(args))
        out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("generate: cost estimate "))
    estimate = json.loads(line.removeprefix("generate: cost estimate "))
    assert estimate == {key: dry[key] for key in estimate}  # the dry run's estimate, before paying
    assert estimate["batch"] is True and estimate["estimated_cost_usd"] == pytest.approx(4 * 0.101 * 0.5)
    assert out.index("generate: cost estimate") < out.index("batch: submitted")
    with FakeGemini(unknown_models={"gemini-3.1-flash-image"}) as server:
        args = batch_overrides(server, tmp_path / "gone", 1, generator="nano_banana_2")
        with pytest.raises(
            CxrsynError, match="404 .*successors: gemini-3-pro-image \\(generator=nano_banana_pro\\)"
        ):
            generate(compose(args))
        assert server.batch_jobs == {}
