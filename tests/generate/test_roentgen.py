"""RoentGen-v2's code path through real diffusers, on a tiny random pipeline built offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.roentgen import RACES, RoentGen
from cxrsyn.generate.run import generate
from tests.conftest import run_cli
from tests.generate.conftest import PRODUCT_ROOT
from tests.generate.test_nano_banana import compose
from tests.generate.tiny_pipeline import build_tiny_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


def settings(pipeline_dir: Path, out_dir: Path, **extra: object) -> list[str]:
    values = {
        "generator": "roentgen",
        "generator.model_id": pipeline_dir,
        "generator.local_files_only": True,
        "generator.resolution": 32,
        "generator.steps": 2,
        "generator.n_per_class": 2,
        "generator.show_progress": False,
        "generator.prompt_template": "'{age} year old {sex}.'",
        "out_dir": out_dir,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def test_generate_resume_and_manifest(pipeline_dir, tmp_path):
    args = settings(pipeline_dir, tmp_path / "out")
    result = run_cli("cxrsyn.generate", *args, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    table = read_manifest(tmp_path / "out")
    assert len(table) == 4 and table["label"].sum() == 2 and table["sha256"].is_unique
    assert set(table["generator"]) == {"roentgen"} and set(table["steps"]) == {2}
    assert not table["prompt_truncated"].any()
    assert table["prompt"].str.fullmatch(r"\d+ year old (female|male)\.").all()
    again = run_cli("cxrsyn.generate", *args, f"hydra.run.dir={tmp_path}/run2")
    assert again.returncode == 0 and "0 to make" in again.stdout
    # other sampler settings would mix two generations in one folder: refused, naming each key
    changed = settings(
        pipeline_dir, tmp_path / "out", **{"generator.steps": 3, "generator.guidance_scale": 5.0}
    )
    refused = run_cli("cxrsyn.generate", *changed, f"hydra.run.dir={tmp_path}/run3")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
    assert "generator.steps: 2 -> 3" in lines[0] and "generator.guidance_scale: 3.0 -> 5.0" in lines[0]
    assert "generator.resolution" not in lines[0]


def test_an_image_does_not_depend_on_its_batch(pipeline_dir, tmp_path):
    one = generate(compose(settings(pipeline_dir, tmp_path / "one", **{"generator.batch_size": 1})))
    three = generate(compose(settings(pipeline_dir, tmp_path / "three", **{"generator.batch_size": 3})))
    assert one["kept"] == three["kept"] == 4
    first = read_manifest(tmp_path / "one").set_index("request_id")["sha256"]
    second = read_manifest(tmp_path / "three").set_index("request_id")["sha256"]
    assert first.to_dict() == second.to_dict()


def test_the_default_prompts_are_roentgens_published_format_with_race(pipeline_dir, tmp_path):
    two = settings(pipeline_dir, tmp_path, **{"generator.n_per_class": 1})
    args = [arg for arg in two if not arg.startswith("generator.prompt_template")]
    generate(compose(args))
    for row in read_manifest(tmp_path).itertuples():  # race is recorded beside the prompt it made
        assert row.race in RACES and row.prompt == f"{row.age} year old {row.race} {row.sex}. {row.finding}."


def test_the_pipeline_is_loaded_in_the_dtype_asked(pipeline_dir):
    """``dtype=`` reaches the weights (diffusers before 0.40 ignored it silently and loaded float32)."""
    import torch

    pipeline = RoentGen(model_id=str(pipeline_dir), local_files_only=True)._load(torch.bfloat16)
    assert pipeline.unet.dtype == torch.bfloat16 and pipeline.text_encoder.dtype == torch.bfloat16


def test_the_warning_guard_catches_a_torch_dtype_call_from_cxrsyn(
    pipeline_dir, our_deprecated_calls_are_errors
):
    """The guard of tests/generate/conftest.py fails a test whose cxrsyn code passes ``torch_dtype=``: the call
    below is compiled as if it were in cxrsyn/generate/roentgen.py."""
    import torch
    from diffusers import DiffusionPipeline

    source = "DiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32, local_files_only=True)\n"
    code = compile(source, str(PRODUCT_ROOT / "generate" / "roentgen.py"), "exec")
    exec(code, {"DiffusionPipeline": DiffusionPipeline, "torch": torch, "path": str(pipeline_dir)})  # noqa: S102
    offences = our_deprecated_calls_are_errors
    assert any(
        "torch_dtype" in offence and "cxrsyn/generate/roentgen.py:1" in offence for offence in offences
    )
    offences.clear()  # caught: this test passes


def test_unloadable_model_is_one_line(tmp_path):
    with pytest.raises(CxrsynError, match="cannot load generator.model_id=.*gated.*local copy"):
        generate(compose(settings(tmp_path / "no_such_model", tmp_path / "out")))
