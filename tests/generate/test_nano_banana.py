"""Nano Banana generation through the real google-genai client against a local server that speaks the
Gemini wire format and injects faults."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cxrsyn.core.compose import source_node
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import sha256_of_file
from cxrsyn.core.manifest import read_manifest
from cxrsyn.core.runfolder import exclusive
from cxrsyn.generate.run import generate
from cxrsyn.generate.store import OutputStore
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.conftest import REPO_ROOT, compose_config, run_cli
from tests.generate.conftest import KEY


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
    assert "4 to make; paid calls: 4 generate_content calls" in lines[-2]
    # the last line is the estimate: 4 images at the paper model's $0.039 (study.md section 8), which does
    # not think, plus its prompt tokens at $0.30/M (about 70 each; the estimate is rounded to 0.0001)
    estimate = json.loads(lines[-1])
    assert {key: estimate[key] for key in ("requests", "model", "image_size", "batch", "prices_as_of")} == {
        "requests": 4,
        "model": "gemini-2.5-flash-image",
        "image_size": None,
        "batch": False,
        "prices_as_of": "2026-11",
    }
    assert estimate["usd_per_image"] == {"image": 0.039, "thinking": 0.0}
    assert estimate["estimated_cost_usd"] == pytest.approx(4 * 0.039 + estimate["prompt_usd"], abs=1e-4)
    assert 0 < estimate["prompt_usd"] < 4 * 100 * 0.30 / 1e6
    assert not (tmp_path / "b").exists()


def test_changed_prompts_do_not_mix_into_an_existing_folder(tmp_path, key):
    with FakeGemini() as server:
        generate(compose(overrides(server, tmp_path, 1)))
        changed = overrides(
            server, tmp_path, 1, **{"generator.prompt_template": "'{age} year old {sex}. {finding}'"}
        )
        with pytest.raises(
            CxrsynError, match="generator.prompt_template: .* -> '{age} year old {sex}. {finding}'"
        ):
            generate(compose(changed))
        # a folder from before settings were recorded: the prompts of the kept images are still compared
        summary_path = tmp_path / "generation.json"
        summary = json.loads(summary_path.read_text())
        del summary["settings"]
        summary_path.write_text(json.dumps(summary))
        for path in (tmp_path / "records").glob("*.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": None}))
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


class FullDisk(OutputStore):
    """The real store, except that the disk fills up after ``fail_after`` images."""

    fail_after = 4

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saves = 0
        self._count_lock = threading.Lock()

    def save(self, request, png, extra=None):
        with self._count_lock:
            self.saves += 1
            number = self.saves
        if number > self.fail_after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.images / f"{request.id}.png"))
        return super().save(request, png, extra)


def test_any_error_in_a_worker_stops_new_requests(tmp_path, key, monkeypatch):
    monkeypatch.setattr("cxrsyn.generate.run.OutputStore", FullDisk)
    concurrency = 3
    with FakeGemini(latency_s=0.05) as server:
        args = overrides(server, tmp_path, 10, **{"generator.concurrency": concurrency})
        with pytest.raises(CxrsynError, match="No space left on device.*rerun the same command"):
            generate(compose(args))
        # 20 requests were queued: only those in flight when the disk filled were sent after it
        assert server.images_served <= FullDisk.fail_after + concurrency
    assert len(list((tmp_path / "records").glob("*.json"))) == FullDisk.fail_after


def test_a_folder_holds_one_generation(tmp_path, key):
    with FakeGemini() as server:
        generate(compose(overrides(server, tmp_path, 1)))
        summary = json.loads((tmp_path / "generation.json").read_text())
        settings = summary["settings"]
        assert settings["generator.model"] == "gemini-2.5-flash-image" and settings["seed"] == 0
        assert settings["generator.image_size"] is None and settings["grid.attributes.sex"] == [
            "female",
            "male",
        ]
        records = [json.loads(path.read_text()) for path in (tmp_path / "records").glob("*.json")]
        assert {record["fingerprint"] for record in records} == {summary["fingerprint"]}
        sent = dict(server.paths)
        changed = {"generator.model": "gemini-3.1-flash-image", "generator.image_size": "2K"}
        for extra in ({}, {"dry_run": True}):
            with pytest.raises(CxrsynError) as raised:
                generate(compose(overrides(server, tmp_path, 1, **changed, **extra)))
            message = str(raised.value)
            assert "\n" not in message and "use a new out_dir" in message
            assert "generator.model: 'gemini-2.5-flash-image' -> 'gemini-3.1-flash-image'" in message
            assert "generator.image_size: None -> '2K'" in message
            assert "seed:" not in message and "aspect_ratio" not in message  # only the keys that differ
        with pytest.raises(CxrsynError, match="seed: 0 -> 1"):
            generate(compose([*overrides(server, tmp_path, 1), "seed=1"]))
        assert server.paths == sent  # refused before any request
        # settings that change no image (concurrency, retries, timeouts) resume the same folder
        same = overrides(server, tmp_path, 1, **{"generator.concurrency": 1, "generator.max_retries": 1})
        assert generate(compose(same))["kept"] == 2


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with FakeGemini() as server:
        args = [*overrides(server, out, 1), f"hydra.run.dir={tmp_path}/run"]
        with exclusive(out, "test"):  # this test process is the run writing the folder
            result = run_cli("cxrsyn.generate", *args, env={"GEMINI_API_KEY": KEY})
            assert server.paths == {}
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert str(out) in lines[0] and f"pid {os.getpid()}" in lines[0] and "another run" in lines[0]
    assert not (out / ".cxrsyn.lock.owner").exists()
    with FakeGemini() as server, pytest.MonkeyPatch.context() as patch:  # released: the same run goes ahead
        patch.setenv("GEMINI_API_KEY", KEY)
        assert generate(compose(overrides(server, out, 1)))["kept"] == 2


def test_a_retired_model_names_its_successors(tmp_path, key):
    with FakeGemini(unknown_models={"gemini-2.5-flash-image"}) as server:
        with pytest.raises(CxrsynError) as raised:
            generate(compose(overrides(server, tmp_path, 2, **{"generator.concurrency": 1})))
        assert server.served == {} and server.images_served == 0
    message = str(raised.value)
    assert "\n" not in message and "404" in message and "'gemini-2.5-flash-image'" in message
    for fragment in (
        "gemini-3.1-flash-image",
        "generator=nano_banana_2",
        "gemini-3-pro-image",
        "generator=nano_banana_pro",
    ):
        assert fragment in message


def test_an_image_size_the_model_lacks_is_refused_before_any_request(tmp_path, key):
    with FakeGemini() as server:
        args = overrides(server, tmp_path, 1, generator="nano_banana_pro", **{"generator.image_size": 512})
        with pytest.raises(
            CxrsynError, match="image_size='512' is not offered by gemini-3-pro-image; use one of 1K, 2K, 4K"
        ):
            generate(compose(args))
        assert server.paths == {}


def test_rows_record_the_reported_model_version_and_watermark_fields(tmp_path, key):
    fields = {"synthidWatermark": {"applied": True}, "visibleWatermark": False}
    with FakeGemini(watermark_fields=fields) as server:
        generate(compose(overrides(server, tmp_path / "marked", 1)))
    with FakeGemini() as server:
        generate(compose(overrides(server, tmp_path / "plain", 1)))
    table = read_manifest(tmp_path / "marked")
    assert set(table["model_version"]) == {
        "gemini-2.5-flash-image-fake-001"
    }  # what the API said, not the id asked
    for path in (tmp_path / "marked" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        assert (
            json.loads(record["synthid"]) == {"applied": True} and json.loads(record["visible_mark"]) is False
        )
        assert json.loads(record["watermark"]) == {
            "candidates[0].synthidWatermark": {"applied": True},
            "candidates[0].visibleWatermark": False,
        }
    for path in (tmp_path / "plain" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["watermark"] == record["visible_mark"] == record["synthid"] == "unknown"


@pytest.mark.slow
def test_successor_configs_write_to_their_own_folders_and_train_from_there(tmp_path, compose_train):
    successors = {
        "nano_banana_2": ("gemini-3.1-flash-image", 0.067),
        "nano_banana_pro": ("gemini-3-pro-image", 0.134),
    }
    result = run_cli(
        "cxrsyn.generate",
        "-m",
        f"generator={','.join(successors)}",
        f"paths.data_dir={tmp_path}",
        "dry_run=true",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    estimates = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    for (generator, (model, price)), estimate in zip(successors.items(), estimates, strict=True):
        assert estimate["model"] == model
        assert f"already in {tmp_path / 'synthetic' / generator / 'raw'}," in result.stdout
        assert estimate["image_size"] == "1K" and estimate["requests"] == 300
        # study.md section 8, plus the assumed 1,000 thinking tokens per image (conf/prices/gemini.yaml)
        thinking = 1000 * {"nano_banana_2": 3.0, "nano_banana_pro": 12.0}[generator] / 1e6
        assert estimate["estimated_cost_usd"] == pytest.approx(300 * (price + thinking), abs=0.05)
        for variant, crop in (("raw", 0.0), ("cropped", 0.3)):
            real = compose_train([f"data={generator}_{variant}", f"paths.data_dir={tmp_path}"])
            assert Path(real.data.root) == tmp_path / "synthetic" / generator / variant
            stand_in = source_node(compose_train([f"data={generator}_{variant}", "source=phantom"]), "data")
            assert stand_in["_target_"].endswith("PhantomFolder") and stand_in["crop_bottom_fraction"] == crop
