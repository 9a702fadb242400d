"""A study is one config file: experiments/README.md and every W&B sweep file are written from
conf/experiment/*.yaml, every study has its folder, and the W&B grid is the Hydra sweep."""

from __future__ import annotations

import subprocess
import sys

from omegaconf import OmegaConf

from cxrsyn.core.config import CONF_DIR
from cxrsyn.core.studies import EXPERIMENTS_DIR, expected_files, load_study, study_names
from tests.conftest import REPO_ROOT, compose_config


def test_every_study_config_has_its_folder_readme_and_primary_endpoint():
    names = study_names()
    assert names and names == sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    for name in names:
        study = load_study(name)
        assert study.name == name and study.question and study.published
        assert (EXPERIMENTS_DIR / name / "README.md").is_file(), name
        cfg = compose_config("train", [f"+experiment={name}"])
        assert study.primary["test_set"] in cfg.test_sets, name  # the primary endpoint is a test set it runs


def test_committed_study_table_and_sweep_files_are_written_from_the_configs():
    stale = [
        str(path.relative_to(REPO_ROOT))
        for path, text in expected_files().items()
        if not path.is_file() or path.read_text() != text
    ]
    assert not stale, f"run `make studies`: {stale}"


def composed_sweep(name: str, source: str) -> dict[str, list[str]]:
    """The sweep Hydra runs for ``+experiment=name source=...``: the composed, resolved hydra.sweeper.params."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"+experiment={name}", f"source={source}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    return {key: [v.strip() for v in str(params[key]).split(",")] for key in params}


def test_wandb_grid_is_the_hydra_sweep_on_real_data():
    for name in study_names():
        sweep = OmegaConf.load(EXPERIMENTS_DIR / name / "wandb_sweep.yaml")
        params = composed_sweep(name, "real")
        assert list(sweep.parameters) == list(params), name
        for key, values in params.items():
            assert [str(v).lower() for v in sweep.parameters[key]["values"]] == [v.lower() for v in values]


def test_real_data_studies_run_five_seeds_and_the_phantom_three():
    for name in study_names():
        assert composed_sweep(name, "real")["seed"] == ["0", "1", "2", "3", "4"], name
        assert composed_sweep(name, "phantom")["seed"] == ["0", "1", "2"], name
        assert load_study(name).seeds_by_source == {"real": list("01234"), "phantom": list("012")}


def test_makefile_lists_the_studies_from_the_config_folder():
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-pn", "experiments"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("STUDIES"))
    assert "wildcard conf/experiment/*.yaml" in line
    listed = subprocess.run(
        [sys.executable, "-m", "cxrsyn.core.studies", "--names"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed == study_names()
