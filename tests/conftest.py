"""Shared fixtures. Nothing here downloads: hubs are switched to offline mode, W&B has no key, and every
image a test reads is made by the test (phantom, Pillow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrsyn.core.config import CONF_DIR

REPO_ROOT = CONF_DIR.parent

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_SILENT", "true")
for name in ("WANDB_API_KEY", "WANDB_MODE", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
    os.environ.pop(name, None)


def tiny_overrides(data_dir: Path, **extra: object) -> list[str]:
    """Overrides that shrink the default study to seconds: small phantom sets, a tiny backbone, 2 epochs."""
    values: dict[str, object] = {
        "paths.data_dir": data_dir,
        "data.n_per_class": 16,
        "data.image_size": 64,
        "test_sets.phantom_real.n_per_class": 15,
        "test_sets.phantom_real.image_size": 64,
        "datamodule.image_size": 48,
        "datamodule.batch_size": 8,
        "datamodule.num_workers": 0,
        "model.backbone": "test_resnet",
        "trainer.max_epochs": 2,
        "trainer.log_every_n_steps": 1,
        "trainer.enable_progress_bar": False,
        "num_threads": 1,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="session")
def phantom_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the session: the tiny phantom sets are generated once, then reused by every run."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def tiny_phantom(phantom_data_dir: Path) -> Path:
    """The tiny phantom sets of ``tiny_overrides``, generated in-process; returns the data folder."""
    from hydra import compose, initialize_config_dir

    from cxrsyn.core.compose import build_datamodule

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=tiny_overrides(phantom_data_dir))
    build_datamodule(cfg).prepare_data()
    return phantom_data_dir


def compose_config(config_name: str, overrides: list[str]):
    """Compose ``conf/<config_name>.yaml`` in-process with overrides, as its command line would."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture
def compose_train():
    """Compose ``conf/train.yaml`` in-process with overrides, as ``python -m cxrsyn.train`` would."""
    return lambda overrides: compose_config("train", overrides)


def run_cli(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heaviest tests first, longest first (``@pytest.mark.heavy(minutes=N)``): with xdist's work stealing
    (`make test`) they start at once instead of ending the run alone on one worker."""

    def order(item: pytest.Item) -> tuple[bool, float]:
        heavy = item.get_closest_marker("heavy")
        return heavy is None, -(heavy.kwargs.get("minutes", 1) if heavy else 0)

    items.sort(key=order)  # stable: the rest keep their order
