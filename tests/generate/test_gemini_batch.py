"""Gemini batch mode through the real client: JSONL file in, results matched by key, never paid twice.

The fake answers as Google's backend does: results shuffled, inlined results without their metadata, lines
dropped, doubled or without a key on request. ``server.paid`` counts the final images generated per prompt
(what a bill counts, dropped lines included) and ``server.served_images`` their sha256: every kept image must
be the one generated for its own prompt, and no prompt may be paid twice unless the user asks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import cxrsyn.generate.gemini_batch as gemini_batch
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.conftest import REPO_ROOT, run_cli
from tests.generate.test_nano_banana import KEY, FullDisk, assert_complete, compose, overrides


def batch_overrides(server, out_dir, n_per_class, **extra):
    return overrides(
        server,
        out_dir,
        n_per_class,
        **{"generator.batch": True, "generator.batch_poll_s": 0.02, "generator.batch_size": 4, **extra},
    )


def assert_each_image_is_its_own_and_paid_once(out_dir, server):
    table = read_manifest(out_dir)
    for prompt, sha in zip(table["prompt"], table["sha256"], strict=True):
        assert sha in server.served_images[prompt], "an image was filed under another request's prompt"
    assert max(server.paid.values()) == 1, "a prompt was paid twice"
    return table


def jobs_of(out_dir):
    return json.loads((out_dir / "batch_jobs.json").read_text())


def test_results_are_matched_by_key_in_any_order_and_without_metadata(tmp_path, key):
    with FakeGemini(batch_polls=2) as server:  # shuffled results; inlined ones would carry no metadata
        generate(compose(batch_overrides(server, tmp_path, 5)))  # 10 requests in jobs of 4, 4, 2
        assert len(server.batch_jobs) == 3 and {job["source"] for job in server.batch_jobs.values()} == {
            "file"
        }
        assert server.api_keys == {KEY}
    table = assert_complete(tmp_path, 5)
    assert_each_image_is_its_own_and_paid_once(tmp_path, server)
    assert table["batch_job"].str.startswith("batches/fake-").all()
    # what was uploaded is kept beside the images: one {"key", "request"} line per request
    for job in jobs_of(tmp_path):
        lines = [json.loads(line) for line in (tmp_path / job["input"]).read_text().splitlines()]
        assert [line["key"] for line in lines] == job["request_ids"]
        assert server.uploads[job["file"]] == (tmp_path / job["input"]).read_bytes()
        assert lines[0]["request"]["generationConfig"] == {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "1:1"},
        }


def test_replies_without_an_image_are_asked_again_by_the_next_run(tmp_path, key):
    with FakeGemini(["safety", "500"], batch_polls=2) as server:
        args = batch_overrides(server, tmp_path, 3)
        with pytest.raises(CxrsynError, match="2 image\\(s\\) still missing"):
            generate(compose(args))
        assert len(server.batch_jobs) == 2 and all(job["collected"] for job in jobs_of(tmp_path))
        generate(compose(args))
        assert len(server.batch_jobs) == 3 and len(server.batch_jobs["batches/fake-3"]["keys"]) == 2
    assert_complete(tmp_path, 3)
    assert_each_image_is_its_own_and_paid_once(tmp_path, server)
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert sorted(kinds) == ["failed", "no_image"]


@pytest.mark.parametrize("fault", ["unkeyed", "missing"])
def test_an_unmatched_result_stops_the_run_and_is_never_paid_again_unasked(tmp_path, key, fault):
    with FakeGemini([fault]) as server:
        args = batch_overrides(server, tmp_path, 3)  # 6 requests in jobs of 4 and 2
        for _ in range(2):  # the run, then a rerun: the same one line, nothing submitted again
            with pytest.raises(CxrsynError) as raised:
                generate(compose(args))
            message = str(raised.value)
            assert "\n" not in message and "1 request(s) of batches/fake-1 stay unresolved" in message
            assert "generator.batch_resubmit_unresolved=true" in message
            assert len(server.batch_jobs) == 2
            assert len(read_manifest(tmp_path)) == 5  # every other image kept
            assert_each_image_is_its_own_and_paid_once(tmp_path, server)
        (unresolved,) = jobs_of(tmp_path)[0]["unresolved"]
        summary = json.loads((tmp_path / "generation.json").read_text())
        assert summary["status"] == "stopped" and summary["missing"] == [unresolved]
        # asked to, the next run submits that one request again (the user accepts it may be paid twice)
        generate(compose([*args, "generator.batch_resubmit_unresolved=true"]))
        assert len(server.batch_jobs) == 3 and server.batch_jobs["batches/fake-3"]["keys"] == [unresolved]
    assert_complete(tmp_path, 3)
    assert sorted(server.paid.values()) == [1] * 5 + [
        2
    ]  # the unresolved prompt was paid by the first job too


def test_an_identical_line_twice_is_kept_once(tmp_path, key, capsys):
    with FakeGemini(["duplicate"]) as server:
        generate(compose(batch_overrides(server, tmp_path, 1)))
    assert_complete(tmp_path, 1)
    assert_each_image_is_its_own_and_paid_once(tmp_path, server)
    assert "repeated 1 identical result line(s); each image was kept once" in capsys.readouterr().out


class Crash(BaseException):
    """A process death at a chosen instant (not an Exception: nothing on the way may catch it)."""


def test_a_crash_right_after_google_accepted_a_job_does_not_pay_again(tmp_path, key, monkeypatch, capsys):
    created = gemini_batch._create

    def create_then_die(nano, client, job):
        created(nano, client, job)
        raise Crash  # Google has the job; batch_jobs.json does not know its name yet

    with FakeGemini() as server:
        args = batch_overrides(server, tmp_path, 2)
        with monkeypatch.context() as patch:
            patch.setattr(gemini_batch, "_create", create_then_die)
            with pytest.raises(Crash):
                generate(compose(args))
        (job,) = jobs_of(tmp_path)
        assert "name" not in job and job["file"] in server.uploads
        generate(compose(args))  # the rerun finds the job by its display name and polls it
        assert len(server.batch_jobs) == 1
    assert (
        "was submitted before the last run stopped: polling it, not submitting again"
        in capsys.readouterr().out
    )
    assert_complete(tmp_path, 2)
    assert_each_image_is_its_own_and_paid_once(tmp_path, server)


def test_a_crash_while_collecting_keeps_what_was_saved_and_pays_nothing_again(tmp_path, key, monkeypatch):
    monkeypatch.setattr("cxrsyn.generate.run.OutputStore", FullDisk)  # the disk fills after 4 images
    with FakeGemini() as server:
        args = batch_overrides(server, tmp_path, 4, **{"generator.batch_size": 8})
        with pytest.raises(CxrsynError, match="No space left on device"):
            generate(compose(args))
        assert len(list((tmp_path / "records").glob("*.json"))) == FullDisk.fail_after
        monkeypatch.setattr("cxrsyn.generate.run.OutputStore", gemini_batch.OutputStore)
        generate(compose(args))  # the results file is read again; nothing is submitted again
        assert len(server.batch_jobs) == 1 and server.downloads == 2
    assert_complete(tmp_path, 4)
    assert_each_image_is_its_own_and_paid_once(tmp_path, server)


def test_a_results_file_that_fails_to_download_is_read_again_not_paid_again(tmp_path, key):
    with FakeGemini(download_failures=1) as server:
        args = batch_overrides(server, tmp_path, 1)
        with pytest.raises(CxrsynError, match="2 image\\(s\\) still missing"):
            generate(compose(args))
        (job,) = jobs_of(tmp_path)
        assert not job.get("collected")
        generate(compose(args))
        assert len(server.batch_jobs) == 1 and server.downloads == 1
    assert_complete(tmp_path, 1)
    assert_each_image_is_its_own_and_paid_once(tmp_path, server)


def test_thinking_models_in_batch_keep_the_final_image(tmp_path, key):
    with FakeGemini() as server:
        summary = generate(compose(batch_overrides(server, tmp_path, 1, generator="nano_banana_pro")))
        assert server.drafts_served == 2 * 2
    table = assert_each_image_is_its_own_and_paid_once(tmp_path, server)
    assert set(table["thought_images"]) == {2} and set(table["usage_thoughts_token_count"]) == {480}
    spend = summary["spend_this_run"]  # batch prices: half the list price, thinking included
    assert spend["usd"]["images"] == pytest.approx(2 * 0.134 * 0.5)
    assert spend["usd"]["thinking"] == pytest.approx(2 * 480 * 12.0 * 0.5 / 1e6)


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
            not jobs_file.exists() or len([j for j in json.loads(jobs_file.read_text()) if j.get("name")]) < 2
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
    assert_each_image_is_its_own_and_paid_once(out, server)


def test_the_estimate_comes_before_the_first_request_and_a_retired_model_stops(tmp_path, key, capsys):
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
    # 4 images at half the 2K list price, with the assumed 1,000 thinking tokens each at half of $3/M
    assert estimate["batch"] is True
    assert estimate["estimated_cost_usd"] == pytest.approx(4 * (0.101 + 0.003) * 0.5, abs=1e-3)
    assert out.index("generate: cost estimate") < out.index("batch: submitted")
    with FakeGemini(unknown_models={"gemini-3.1-flash-image"}) as server:
        args = batch_overrides(server, tmp_path / "gone", 1, generator="nano_banana_2")
        with pytest.raises(
            CxrsynError, match="404 .*successors: gemini-3-pro-image \\(generator=nano_banana_pro\\)"
        ):
            generate(compose(args))
        assert server.batch_jobs == {}
