"""Secrets reach no file: overrides are redacted by key name and by value, and the real entry points (train
with W&B offline, generate as a multirun, evaluate, the data tool) leave no key in any file they write,
Hydra's own ``.hydra/`` files and W&B's offline run included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrsyn.core.secrets import REDACTED, redact_overrides
from tests.conftest import run_cli, tiny_overrides

# One made-up value per variable the issue names, each set in the environment of the runs below.
ENV_SECRETS = {
    "GEMINI_API_KEY": "AIza-env-gemini-0123456789",
    "GOOGLE_API_KEY": "AIza-env-google-0123456789",
    "WANDB_API_KEY": "wandb-env-0123456789abcdef0123456789abcdef",
    "HF_TOKEN": "hf_env_token_0123456789",
    "KAGGLE_KEY": "kaggle-env-key-0123456789",
}
TYPED = "sk-typed-on-the-command-line-42"  # a key typed as an override; in no environment variable
# Secrets inside values of keys the commands read (a +key nothing reads is refused: tests/security/):
# a path holding one, and one interpolated from the environment.
TYPED_OVERRIDES = [
    f"data.root=/nonexistent/see-{ENV_SECRETS['GEMINI_API_KEY']}",
    "+data.exclude_file=${oc.env:HF_TOKEN}",
]
WANDB_OVERRIDES = [
    f"logger.wandb.group=see {ENV_SECRETS['GEMINI_API_KEY']}",
    "logger.wandb.name=${oc.env:HF_TOKEN}",
]
GENERATE_OVERRIDES = [f"generator.prompt_template='see {ENV_SECRETS['GEMINI_API_KEY']} {{finding}}'"]


def leaks(folder: Path) -> list[str]:
    """Files under ``folder`` that hold any secret, with the secret's name."""
    secrets = {"typed": TYPED, **ENV_SECRETS}
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [
                f"{path.relative_to(folder)}: {name}"
                for name, value in secrets.items()
                if value.encode() in data
            ]
    return found


def no_secret_printed(result) -> None:
    for value in (TYPED, *ENV_SECRETS.values()):
        assert value not in result.stdout + result.stderr


def test_a_key_typed_under_a_secret_name_is_refused_and_written_nowhere(tmp_path):
    """``+api_key=...`` is read by nothing (keys come from the environment): refused in one line, and Hydra's
    files, written before the refusal, hold no trace of the value."""
    result = run_cli("cxrsyn.train", f"+api_key={TYPED}", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2 and "+api_key adds a key that nothing reads" in result.stderr
    assert f"+api_key={REDACTED}" in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    assert leaks(tmp_path) == []
    no_secret_printed(result)


def test_overrides_are_redacted_by_key_and_by_value(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret-value")
    overrides = ["seed=1", "+generator.api_key=typed-in", "+notes=see AIza-secret-value", "+token="]
    assert redact_overrides(overrides) == [
        "seed=1",
        f"+generator.api_key={REDACTED}",
        f"+notes=see {REDACTED}",
        "+token=",
    ]


@pytest.mark.slow
def test_no_key_in_any_file_of_a_training_run_with_wandb(tmp_path, phantom_data_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(phantom_data_dir, **{"trainer.max_epochs": 1}),
        "logger=wandb",
        "logger.wandb.mode=offline",
        *WANDB_OVERRIDES,
        f"hydra.run.dir={run_dir}",
        env={**ENV_SECRETS, "NETRC": str(tmp_path / "no-netrc")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # Hydra wrote its files, and W&B its offline run with the command line it recorded, both redacted
    assert f"logger.wandb.group=see {REDACTED}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert f"group: see {REDACTED}" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert f"logger.wandb.group=see {REDACTED}" in (run_dir / ".hydra" / "hydra.yaml").read_text()
    (record,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert f"logger.wandb.group=see {REDACTED}".encode() in record.read_bytes()
    assert leaks(run_dir) == []
    no_secret_printed(result)


@pytest.mark.slow
def test_no_key_in_the_files_of_a_generation_multirun_or_the_data_tool(tmp_path, tiny_phantom):
    env = {**ENV_SECRETS}
    result = run_cli(
        "cxrsyn.generate",
        "-m",
        "generator=phantom",
        "generator.n_per_class=2",
        "generator.image_size=64",
        "generator.show_progress=false",
        f"out_dir={tmp_path}/out",
        *GENERATE_OVERRIDES,
        f"hydra.sweep.dir={tmp_path}/sweep",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "sweep" / "multirun.yaml").is_file() and (tmp_path / "sweep" / "0" / ".hydra").is_dir()
    assert leaks(tmp_path) == []
    no_secret_printed(result)
    summary_file = tmp_path / "summary.json"
    result = run_cli(
        "cxrsyn.data",
        "summarize",
        "data=phantom",
        *tiny_overrides(tiny_phantom)[:3],
        f"summary_file={summary_file}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(summary_file.read_text())["n"] == 32 and leaks(tmp_path) == []
    no_secret_printed(result)
