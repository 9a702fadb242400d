"""No file a user is handed runs code: every option of every command that reads a checkpoint or weights file
is given a pickle whose ``__reduce__`` would write a marker file, and no marker appears; each command stops
with one line instead."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from cxrsyn.core.errors import CxrsynError
from tests.conftest import compose_config, run_cli, tiny_overrides


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict[str, Path]:
    """Payload files in the formats a user may be handed: a checkpoint-like dict saved by torch (zip and
    legacy formats), a whole pickled model with a payload inside, and a plain pickle."""
    folder = tmp_path_factory.mktemp("planted")
    marker = folder / "MARKER"
    files = {"marker": marker, "ckpt": folder / "payload.ckpt"}
    torch.save({"state_dict": {"net.w": torch.zeros(1)}, "epoch": 1, "x": Payload(marker)}, files["ckpt"])
    files["legacy"] = folder / "payload_legacy.pt"
    torch.save({"x": Payload(marker)}, files["legacy"], _use_new_zipfile_serialization=False)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.hook = Payload(marker)  # a model whose pickle carries the payload among its attributes
    files["model"] = folder / "payload_model.pt"
    torch.save(model, files["model"])
    files["pickle"] = folder / "payload.pkl"
    files["pickle"].write_bytes(pickle.dumps({"x": Payload(marker)}))
    return files


def one_line_refusal(result, path: Path) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(path) in lines[0]
    return lines[0]


@pytest.mark.slow
def test_train_options_never_unpickle_code(planted, tiny_phantom, tmp_path):
    """init_from (the CLI), ckpt_path, ckpt_path=last with a planted last.ckpt, model.weights_path."""
    from cxrsyn.training.run import train

    result = run_cli(
        "cxrsyn.train",
        *tiny_overrides(tiny_phantom),
        f"init_from={planted['ckpt']}",
        f"hydra.run.dir={tmp_path / 'cli'}",
    )
    assert "it was not unpickled" in one_line_refusal(result, planted["ckpt"])
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(planted["ckpt"], resumed / "checkpoints" / "last.ckpt")
    cases = {
        "ckpt_path": [f"ckpt_path={planted['ckpt']}", f"paths.output_dir={tmp_path / 'a'}"],
        "last": ["ckpt_path=last", f"paths.output_dir={resumed}"],
        "legacy": [f"ckpt_path={planted['legacy']}", f"paths.output_dir={tmp_path / 'b'}"],
        "weights": [f"model.weights_path={planted['model']}", f"paths.output_dir={tmp_path / 'c'}"],
        "init_pickle": [f"init_from={planted['pickle']}", f"paths.output_dir={tmp_path / 'd'}"],
    }
    for name, extra in cases.items():
        cfg = compose_config("train", [*tiny_overrides(tiny_phantom, **{"gradcam.enabled": False}), *extra])
        with pytest.raises(CxrsynError) as error:
            train(cfg)
        assert "\n" not in str(error.value), name
        assert not planted["marker"].exists(), name


@pytest.mark.slow
def test_evaluate_never_unpickles_code(planted, tiny_phantom, tmp_path):
    result = run_cli(
        "cxrsyn.evaluate",
        f"ckpt_path={planted['ckpt']}",
        "data=phantom_real",
        f"paths.data_dir={tiny_phantom}",
        f"hydra.run.dir={tmp_path}",
    )
    one_line_refusal(result, planted["ckpt"])
    assert not planted["marker"].exists()


@pytest.mark.slow
def test_audit_weights_and_extractor_never_unpickle_code(planted, tiny_phantom, tmp_path):
    """auditor.weights_path through the CLI (torchxrayvision's auditor), then every model the audit can load
    weights into: a whole pickled model with a payload, the pixel auditor's file, a timm extractor's."""
    from cxrsyn.auditing.models import PixelAuditor, TimmExtractor, TorchXRayVisionAuditor

    result = run_cli(
        "cxrsyn.audit",
        "data=phantom",
        "test_sets=[phantom_real]",
        *tiny_overrides(tiny_phantom)[:5],
        f"auditor.weights_path={planted['ckpt']}",
        "image_size=64",
        "workers=1",
        "num_threads=1",
        f"out_dir={tmp_path / 'audit'}",
    )
    one_line_refusal(result, planted["ckpt"])
    for make in (
        lambda: TorchXRayVisionAuditor(weights_path=str(planted["model"])),
        lambda: TorchXRayVisionAuditor(weights_path=str(planted["legacy"])),
        lambda: TorchXRayVisionAuditor(weights_path=str(planted["pickle"])),
        lambda: PixelAuditor(weights_path=str(planted["ckpt"])),
        lambda: TimmExtractor("test_resnet", weights_path=str(planted["ckpt"])),
    ):
        with pytest.raises(CxrsynError, match="not unpickled|not a readable") as error:
            make()
        assert "\n" not in str(error.value)
    assert not planted["marker"].exists()


@pytest.mark.slow
def test_generate_model_folder_never_runs_code(planted, tmp_path):
    """generator=roentgen reads a diffusers folder: a pickled weights file with a payload (through the CLI)
    and a folder that names its own pipeline code are both refused."""
    from cxrsyn.generate.roentgen import RoentGen
    from tests.generate.tiny_pipeline import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path / "sd")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.copy(planted["ckpt"], folder / "unet" / "diffusion_pytorch_model.bin")
    result = run_cli(
        "cxrsyn.generate",
        "generator=roentgen",
        f"generator.model_id={folder}",
        "generator.local_files_only=true",
        "generator.resolution=32",
        "generator.steps=1",
        "generator.n_per_class=1",
        "generator.show_progress=false",
        f"out_dir={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    one_line_refusal(result, folder)
    code = tmp_path / "sd_code"
    shutil.copytree(folder, code)
    (code / "unet" / "diffusion_pytorch_model.bin").unlink()
    shutil.copy(folder.parent / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors", code / "x")
    (code / "evil.py").write_text(
        f"open({str(planted['marker'])!r}, 'w').write('code ran')\n"
        "from diffusers import StableDiffusionPipeline\n"
        "class EvilPipeline(StableDiffusionPipeline):\n    pass\n"
    )
    index = json.loads((code / "model_index.json").read_text())
    (code / "model_index.json").write_text(json.dumps({**index, "_class_name": ["evil", "EvilPipeline"]}))
    with pytest.raises(CxrsynError, match="custom code"):
        RoentGen(model_id=str(code), local_files_only=True)._load(torch.float32)
    assert not planted["marker"].exists()


@pytest.mark.slow
def test_report_reads_no_pickle_or_yaml_object(planted, tmp_path):
    """The report reads JSON, CSV and YAML only (safe loaders): a run folder whose checkpoint is a payload and
    whose config.yaml holds a Python-object tag is reported or refused in one line, and runs nothing."""
    from tests.reporting.test_report import make_run

    for job, seed in enumerate((0, 1)):
        run = tmp_path / "study" / str(job)
        make_run(run, "synthetic_cropped", seed, 1.0)
        (run / "checkpoints").mkdir()
        shutil.copy(planted["ckpt"], run / "checkpoints" / "last.ckpt")
        (run / "config.yaml").write_text(
            f"experiment: !!python/object/apply:exec [\"open({str(planted['marker'])!r}, 'w')\"]\n"
        )
    result = run_cli("cxrsyn.report", str(tmp_path / "study"), "--n-resamples", "20", "--no-figures")
    assert result.returncode in (0, 2), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not planted["marker"].exists()
