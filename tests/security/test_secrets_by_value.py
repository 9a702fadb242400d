"""Keys are redacted by value, not only by name: a Google or W&B key typed under a name nothing recognises, or
inside another value, or carried by an exception message (an HTTP library, a server echoing the key), reaches
no file, no log line and nothing printed; a key that is no valid header value stops before any request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.secrets import REDACTED, redact
from cxrsyn.testing.fake_gemini import FakeGemini
from tests.conftest import run_cli, tiny_overrides

# Made-up keys of the real formats; none is in any environment variable of the runs below.
GOOGLE_KEY = "AIzaSyD-fake0fake1fake2fake3fake4fake5f"  # AIza + 35 URL-safe characters
WANDB_KEY = "wandb_v1_" + "Fk3" * 25 + "x2"  # the 86-character format
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits: a commit, never redacted


def files_holding(folder: Path, *secrets: str) -> list[str]:
    return [
        f"{path.relative_to(folder)}"
        for path in sorted(folder.rglob("*"))
        if path.is_file() and any(secret.encode() in path.read_bytes() for secret in secrets)
    ]


def test_keys_are_found_by_their_form_and_commits_are_not(tmp_path, monkeypatch):
    def redact_text(text: str) -> str:
        return redact([text])[0]

    assert GOOGLE_KEY not in redact_text(f"https://proxy.example/?key={GOOGLE_KEY}&x=1")
    assert redact_text(f"token {WANDB_KEY}.") == f"token {REDACTED}."
    assert redact_text("local-" + "ab" * 20) == REDACTED
    assert redact_text("hf_" + "aB3" * 11) == REDACTED
    assert redact_text(f"commit {GIT_COMMIT} sha256 {'f' * 64}") == f"commit {GIT_COMMIT} sha256 {'f' * 64}"
    # the key `wandb login` saved is found by value, whatever its form (a legacy 40-hex key included)
    legacy = "fedcba9876543210fedcba9876543210fedcba98"
    (tmp_path / "netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {legacy}\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert redact({"notes": f"run with {legacy}"}) == {"notes": f"run with {REDACTED}"}
    # in a config: under any name, nested in lists and other values
    config = {"gemini_key": GOOGLE_KEY, "proxy_url": f"http://u:{GOOGLE_KEY}@proxy:8080", "l": [WANDB_KEY]}
    assert GOOGLE_KEY not in json.dumps(redact(config)) and WANDB_KEY not in json.dumps(redact(config))


def test_a_key_that_is_no_header_value_is_one_line_without_the_key(monkeypatch):
    from cxrsyn.core.keys import checked_key

    for bad, why in (
        (GOOGLE_KEY + "\n", "line break"),
        (f"{GOOGLE_KEY[:10]}\n{GOOGLE_KEY[10:]}", "line break"),
        (f"{GOOGLE_KEY[:10]} {GOOGLE_KEY[10:]}", "space"),
        (GOOGLE_KEY[:-1] + "é", "non-ASCII"),
    ):
        monkeypatch.setenv("GEMINI_API_KEY", bad)
        with pytest.raises(CxrsynError, match=why) as error:
            checked_key("GEMINI_API_KEY")
        assert GOOGLE_KEY[:12] not in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setenv("GEMINI_API_KEY", GOOGLE_KEY)
    assert checked_key("GEMINI_API_KEY") == GOOGLE_KEY


def test_generation_errors_carry_no_key_to_stderr_or_attempts(tmp_path):
    """A key with a line break stops before any request; a server that echoes the key in its error reaches
    neither the screen nor attempts.jsonl nor any file of the run."""
    args = ["generator=nano_banana", "generator.n_per_class=1", "generator.show_progress=false"]
    with FakeGemini() as server:
        result = run_cli(
            "cxrsyn.generate",
            *args,
            f"generator.base_url={server.url}",
            f"out_dir={tmp_path / 'a'}",
            f"hydra.run.dir={tmp_path / 'run_a'}",
            env={"GEMINI_API_KEY": f"{GOOGLE_KEY[:20]}\n{GOOGLE_KEY[20:]}"},
        )
        assert sum(server.paths.values()) == 0  # refused before any request
    assert result.returncode == 2 and "GEMINI_API_KEY is not a valid API key" in result.stderr
    assert GOOGLE_KEY[:20] not in result.stdout + result.stderr
    with FakeGemini(["403"], echo_key=True) as server:
        result = run_cli(
            "cxrsyn.generate",
            *args,
            "generator.concurrency=1",
            f"generator.base_url={server.url}",
            f"out_dir={tmp_path / 'b'}",
            f"hydra.run.dir={tmp_path / 'run_b'}",
            env={"GEMINI_API_KEY": GOOGLE_KEY},
        )
        assert server.api_keys == {GOOGLE_KEY}  # the key was sent, and echoed back in the error
    assert result.returncode == 2, result.stderr[-3000:]
    assert "HTTP 403" in result.stderr and REDACTED in result.stderr
    assert GOOGLE_KEY not in result.stdout + result.stderr
    attempts = (tmp_path / "b" / "attempts.jsonl").read_text()
    assert "fatal" in attempts and REDACTED in attempts
    assert files_holding(tmp_path, GOOGLE_KEY) == []


@pytest.mark.slow
def test_keys_in_other_values_reach_no_file_of_a_training_run_with_wandb(tmp_path, tiny_phantom):
    """Keys inside values nothing flags by name (a W&B group, a run name): config.yaml, metrics.json,
    csv/hparams.yaml, .hydra/ and the W&B offline run hold none; a key typed under an unrecognised name
    (+gemini_key=...) is refused in one line that does not quote it, and leaves it in no file either."""
    run_dir = tmp_path / "run"
    env = {"NETRC": str(tmp_path / "no-netrc"), "WANDB_MODE": "offline"}
    refused = run_cli(
        "cxrsyn.train",
        *tiny_overrides(tiny_phantom),
        f"+gemini_key={GOOGLE_KEY}",
        f"hydra.run.dir={tmp_path / 'refused'}",
        env=env,
    )
    assert refused.returncode == 2 and "+gemini_key adds a key that nothing reads" in refused.stderr
    assert GOOGLE_KEY not in refused.stdout + refused.stderr
    assert files_holding(tmp_path, GOOGLE_KEY) == []
    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(tiny_phantom, **{"trainer.max_epochs": 1, "gradcam.enabled": False}),
        "logger=wandb",
        f"logger.wandb.group=proxy-http://user:{GOOGLE_KEY}@proxy.example:8080",
        f"logger.wandb.name=run-{WANDB_KEY}",
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for name in (
        "config.yaml",
        "metrics.json",
        "csv/hparams.yaml",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    ):
        assert REDACTED in (run_dir / name).read_text(), name
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files_holding(run_dir, GOOGLE_KEY, WANDB_KEY) == []
    assert GOOGLE_KEY not in result.stdout + result.stderr and WANDB_KEY not in result.stdout + result.stderr
