"""Gemini batch mode through the real client's ``batches`` API: submit, poll, collect, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cxrsyn.errors import CxrsynError
from cxrsyn.generate.fake_gemini import FakeGemini
from cxrsyn.generate.run import generate
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
