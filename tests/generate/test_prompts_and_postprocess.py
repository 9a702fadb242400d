"""The prompt grid, the phantom behind the generator interface, and post-processing (crop) with provenance."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import sha256_of_file
from cxrsyn.core.manifest import read_manifest
from cxrsyn.data.images import read_grayscale
from cxrsyn.data.sources import DatasetFolder
from cxrsyn.data.transforms import crop_bottom
from cxrsyn.generate.postprocess import crop_folder
from cxrsyn.generate.prompts import DEFAULT_FINDINGS, PromptGrid
from tests.conftest import run_cli

ROENTGEN_TEMPLATE = "{age} year old {sex}. {finding}"


def test_requests_are_balanced_and_deterministic():
    grid = PromptGrid()
    requests = grid.requests(150, seed=0, template=ROENTGEN_TEMPLATE)
    assert requests == grid.requests(150, seed=0, template=ROENTGEN_TEMPLATE)
    assert requests != grid.requests(150, seed=1, template=ROENTGEN_TEMPLATE)
    assert [r.label for r in requests].count(1) == 150 and len({r.id for r in requests}) == 300
    pneumonia = [r for r in requests if r.label == 1]
    normal = [r for r in requests if r.label == 0]
    for name in ("sex", "age_band", "habitus", "projection"):  # same attribute mix in both classes
        assert Counter(r.attributes[name] for r in pneumonia) == Counter(r.attributes[name] for r in normal)
    findings = Counter(r.attributes["finding"] for r in pneumonia)
    assert (
        set(findings) == set(DEFAULT_FINDINGS["pneumonia"])
        and max(findings.values()) - min(findings.values()) <= 1
    )
    assert {r.attributes["finding"] for r in normal} == set(DEFAULT_FINDINGS["normal"])
    for r in requests:
        low, high = map(int, r.attributes["age_band"].split("-"))
        assert low <= r.attributes["age"] <= high
        assert r.prompt == f"{r.attributes['age']} year old {r.attributes['sex']}. {r.attributes['finding']}"


def test_bad_templates_and_grids_are_one_line_errors():
    with pytest.raises(CxrsynError, match="uses \\{race\\}, which is not an attribute"):
        PromptGrid().requests(2, 0, "{age} year old {race} {sex}")
    with pytest.raises(CxrsynError, match="findings.normal is empty"):
        PromptGrid(findings={"pneumonia": ["x"], "normal": []}).requests(2, 0, ROENTGEN_TEMPLATE)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "phantom"
    run = tmp_path_factory.mktemp("run")
    result = run_cli(
        "cxrsyn.generate",
        "generator=phantom",
        f"out_dir={out}",
        "generator.n_per_class=4",
        "generator.image_size=64",
        "generator.show_progress=false",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_phantom_generator_writes_the_same_format(phantom_folder):
    table = DatasetFolder(root=str(phantom_folder)).index().table
    assert len(table) == 8 and table["label"].sum() == 4
    assert {"prompt", "sha256", "generator", "model", "seed", "timestamp", "finding", "age"} <= set(
        table.columns
    )
    assert set(table["generator"]) == {"phantom"}


def test_crop_is_the_transforms_crop_with_provenance_and_idempotent(phantom_folder, tmp_path):
    out = tmp_path / "cropped"
    first = crop_folder(phantom_folder, out, 0.3)
    assert first == {"images": 8, "written": 8, "operation": "crop_bottom(fraction=0.3)"}
    source = read_manifest(phantom_folder)
    derived = read_manifest(out)
    assert list(derived["source_path"]) == list(source["path"])
    assert list(derived["source_sha256"]) == list(source["sha256"])
    for row in derived.itertuples(index=False):
        original = np.asarray(Image.open(phantom_folder / row.source_path))
        np.testing.assert_array_equal(np.asarray(Image.open(out / row.path)), crop_bottom(original, 0.3))
        assert sha256_of_file(out / row.path) == row.sha256
    raw = read_grayscale(phantom_folder / source["path"][0])
    assert read_grayscale(out / derived["path"][0]).shape == crop_bottom(raw, 0.3).shape
    assert crop_folder(phantom_folder, out, 0.3)["written"] == 0  # idempotent
    assert crop_folder(phantom_folder, out, 0.2)["written"] == 8  # another operation rewrites


def test_postprocess_cli(phantom_folder, tmp_path):
    result = run_cli(
        "cxrsyn.postprocess", f"in_dir={phantom_folder}", f"out_dir={tmp_path}/c", "crop_bottom_fraction=0.3"
    )
    assert result.returncode == 0 and "8 written" in result.stdout
    bad = run_cli(
        "cxrsyn.postprocess", f"in_dir={phantom_folder}", f"out_dir={tmp_path}/d", "crop_bottom_fraction=1.2"
    )
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: crop_bottom_fraction=1.2 is not allowed: crop_bottom_fraction must be a number in [0, 1)"
    )


# RoentGen-v2's demo prompts (github.com/StanfordMIMI/RoentGen-v2, demo_data/demo_inference_prompts.csv) use
# these race values, in capitals: "28 year old WHITE female. No evidence of acute cardiopulmonary disease ."
ROENTGEN_DEMO_RACES = {"WHITE", "BLACK", "ASIAN", "HISPANIC"}


def test_roentgen_prompts_follow_the_published_format_with_race(tmp_path, capsys):
    from cxrsyn.generate.roentgen import RACES
    from cxrsyn.generate.run import generate
    from tests.generate.test_nano_banana import compose

    assert {race.upper() for race in RACES} == ROENTGEN_DEMO_RACES
    assert list(compose(["generator=roentgen"]).generator.grid_attributes.race) == list(RACES)  # one list
    generate(
        compose(["generator=roentgen", "generator.n_per_class=8", f"out_dir={tmp_path}", "dry_run=true"])
    )
    prompts = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(prompts) == 16
    races = Counter()
    for request_id, prompt in prompts:
        match = re.fullmatch(r"(\d+) year old (White|Black|Asian|Hispanic) (female|male)\. (.+)\.", prompt)
        assert match, prompt
        races[(request_id.split("-")[0], match.group(2))] += 1
    # balanced within each class: 8 images over 4 categories
    assert races == {(cls, race): 2 for cls in ("pneumonia", "normal") for race in RACES}


def test_race_is_recorded_per_image_and_becomes_a_subgroup_where_present(tmp_path):
    from cxrsyn.core.config import CONF_DIR  # noqa: F401 - the composed configs below come from conf/
    from cxrsyn.evaluation.outputs import subgroup_metrics
    from cxrsyn.generate.run import generate
    from tests.conftest import compose_config
    from tests.generate.test_nano_banana import compose

    generate(
        compose(
            [
                "generator=phantom",
                "generator.n_per_class=24",
                "generator.image_size=64",
                "generator.show_progress=false",
                "+generator.grid_attributes={race:[White,Black]}",
                f"out_dir={tmp_path}",
            ]
        )
    )
    table = read_manifest(tmp_path)
    assert table.groupby(["label", "race"]).size().to_dict() == {
        (lab, r): 12 for lab in (0, 1) for r in ("Black", "White")
    }
    table["prob"] = np.random.default_rng(0).random(len(table))
    for config in ("train", "evaluate"):
        columns = list(compose_config(config, []).evaluation.subgroups.columns)
        assert "race" in columns, config
        result = subgroup_metrics(table, columns, None, min_per_class=5)
        assert set(result["race"]) == {"Black", "White"} and result["race"]["White"]["n"] == 24


class NotAGenerator:
    """Takes the phantom's settings but keeps none of the Generator interface beyond them."""

    def __init__(self, **settings):
        self.n_per_class = settings["n_per_class"]
        self.prompt_template = settings["prompt_template"]


def test_a_generator_class_without_the_interface_is_one_line(tmp_path):
    from cxrsyn.generate.generator import Generator
    from cxrsyn.generate.nano_banana import NanoBanana
    from cxrsyn.generate.phantom_generator import PhantomGenerator
    from cxrsyn.generate.roentgen import RoentGen
    from cxrsyn.generate.run import generate
    from tests.generate.test_nano_banana import compose

    for kept in (NanoBanana(), RoentGen(), PhantomGenerator()):
        assert isinstance(kept, Generator)
    target = f"{__name__}.NotAGenerator"
    with pytest.raises(CxrsynError) as raised:
        generate(compose(["generator=phantom", f"generator._target_={target}", f"out_dir={tmp_path}"]))
    message = str(raised.value)
    assert "\n" not in message and f"generator._target_={target} does not keep" in message
    for member in (
        "name",
        "grid_attributes",
        "model",
        "image_settings",
        "billing",
        "check_ready",
        "generate",
    ):
        assert member in message
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_the_default_grid_is_the_adult_grid_unchanged():
    """conf/grid/adult.yaml holds the grid generate.yaml held before: folders generated then keep their
    settings fingerprint (grid.* keys and values are the same)."""
    from cxrsyn.generate.prompts import DEFAULT_AGE_YEARS
    from cxrsyn.phantom.grid import DEFAULT_ATTRIBUTES
    from tests.generate.test_nano_banana import compose

    grid = compose([]).grid
    assert set(grid) == {"attributes", "findings", "age_years"}
    assert {k: tuple(v) for k, v in grid.attributes.items()} == DEFAULT_ATTRIBUTES
    assert {k: tuple(v) for k, v in grid.findings.items()} == DEFAULT_FINDINGS
    assert {k: tuple(v) for k, v in grid.age_years.items()} == DEFAULT_AGE_YEARS


def test_paediatric_grid_asks_nano_banana_for_children_of_kermanys_ages(tmp_path, capsys):
    from cxrsyn.generate.run import generate
    from tests.generate.test_nano_banana import compose

    cfg = compose(["grid=paediatric", "generator=nano_banana", "generator.n_per_class=8", "dry_run=true"])
    assert str(cfg._get_node("out_dir")._value()).endswith("/paediatric/raw")  # never the adult folder
    cfg.out_dir = str(tmp_path)
    generate(cfg)
    prompts = dict(line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line)
    assert len(prompts) == 16
    ages = []
    for prompt in prompts.values():
        match = re.search(r"of a (\d+) year old (female|male) child with (slim|average) build", prompt)
        assert match and prompt.startswith("A realistic paediatric frontal chest X-ray"), prompt
        assert re.search(r"(AP supine|AP erect)", prompt), prompt
        ages.append(int(match.group(1)))
    assert min(ages) >= 1 and max(ages) <= 5
    normal = [p for request, p in prompts.items() if request.startswith("normal")]
    assert all("normal thymus" in p for p in normal)


def test_paediatric_grid_keeps_roentgens_published_format(tmp_path, capsys):
    from cxrsyn.generate.run import generate
    from tests.generate.test_nano_banana import compose

    generate(
        compose(
            [
                "grid=paediatric",
                "generator=roentgen",
                "generator.n_per_class=4",
                f"out_dir={tmp_path}",
                "dry_run=true",
            ]
        )
    )
    prompts = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(prompts) == 8
    for prompt in prompts:
        match = re.fullmatch(r"(\d+) year old (White|Black|Asian|Hispanic) (female|male)\. (.+)\.", prompt)
        assert match and 1 <= int(match.group(1)) <= 5, prompt
