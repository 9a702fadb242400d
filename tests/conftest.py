"""Shared fixtures. Nothing here downloads: hubs are switched to offline mode, W&B has no key, and every
image a test reads is made by the test (phantom, Pillow)."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cxrsyn.core.config import CONF_DIR

REPO_ROOT = CONF_DIR.parent


def _pin_worker() -> None:
    """Under pytest-xdist, this worker's share of the cores (``make test``: one worker per core, one core
    each). Commands and in-process training default their torch threads to the cores they may use
    (``cxrsyn.core.parallel.usable_cores``), and the commands a test starts inherit the share, so two workers
    never run four spinning threads on two cores."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index, count = int(worker.removeprefix("gw")), int(count)
    share = cores[index % len(cores) :: count] if count <= len(cores) else [cores[index % len(cores)]]
    os.sched_setaffinity(0, share or cores)
    import torch

    torch.set_num_threads(len(share or cores))


_pin_worker()
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
    """Run ``python -m module args`` from the repository root, as a user would: a process of its own with
    that command line, environment and exit code, started by this worker's pre-warmed fork server
    (``tests/forkserver.py``: the libraries every command imports are imported once per worker, not once per
    command); a plain subprocess when ``CXRSYN_TEST_SUBPROCESS=1`` or the server cannot start."""
    environment = {**os.environ, **(env or {})}
    server = None if os.environ.get("CXRSYN_TEST_SUBPROCESS") == "1" else _fork_server()
    if server is None:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
        )
    with tempfile.TemporaryDirectory(prefix="cxrsyn-cli-") as folder:
        streams = {name: os.path.join(folder, name) for name in ("stdout", "stderr")}
        request = {
            "module": module,
            "args": list(args),
            "env": environment,
            "cwd": str(REPO_ROOT),
            "timeout": timeout,
        }
        try:
            server.stdin.write(json.dumps({**request, **streams}) + "\n")
            server.stdin.flush()
            line = server.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:  # the server died: say so, and run this command as a plain subprocess
            print(
                f"tests/forkserver.py exited ({server.wait()}); running {module} as a subprocess",
                file=sys.stderr,
            )
            _SERVER[:] = [None]
            return run_cli(module, *args, env=env, timeout=timeout)
        answer = json.loads(line)
        out, err = (Path(streams[name]).read_text(errors="replace") for name in ("stdout", "stderr"))
    command = [sys.executable, "-m", module, *args]
    if answer["timed_out"]:
        raise subprocess.TimeoutExpired(command, timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(command, answer["returncode"], out, err)


_SERVER: list[subprocess.Popen | None] = []


def _fork_server() -> subprocess.Popen | None:
    """This worker's fork server, started on first use (None when it could not start)."""
    if _SERVER and (_SERVER[0] is None or _SERVER[0].poll() is None):
        return _SERVER[0]
    _SERVER.clear()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.forkserver"],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    ready = server.stdout.readline()
    if not ready.strip().startswith("{"):
        server.kill()
        server = None
    _SERVER.append(server)
    if server is not None:
        atexit.register(server.kill)
    return server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heaviest tests first, longest first (``@pytest.mark.heavy(minutes=N)``): with xdist's work stealing
    (`make test`) they start at once instead of ending the run alone on one worker."""

    def order(item: pytest.Item) -> tuple[bool, float]:
        heavy = item.get_closest_marker("heavy")
        return heavy is None, -(heavy.kwargs.get("minutes", 1) if heavy else 0)

    items.sort(key=order)  # stable: the rest keep their order
