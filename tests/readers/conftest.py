"""A small reader study made once per session from the phantom (``source=phantom``), as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

N_PER_SOURCE = 12


def make_overrides(data_dir: Path, out_dir: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "source": "phantom",
        "reference": "rsna",  # the shorthand for data@reference=rsna
        "paths.data_dir": data_dir,
        "data.phantom.n_per_class": 8,
        "data.phantom.image_size": 64,
        "reference.phantom.n_per_class": 8,
        "reference.phantom.image_size": 64,
        "n_per_source": N_PER_SOURCE,
        "image_size": 96,
        "seed": 0,
        "out_dir": out_dir,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="session")
def reader_study(phantom_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("reader_study")
    done = run_cli("cxrsyn.readers", "make", *make_overrides(phantom_data_dir, out_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    return out_dir
