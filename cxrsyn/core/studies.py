"""The studies, read from their one source: ``conf/experiment/<name>.yaml`` holds each study's question, arms
(``hydra.sweeper.params``), comparisons, primary endpoint and the published numbers to read it against.
``experiments/README.md`` (the table of studies) and every ``experiments/<name>/wandb_sweep.yaml`` are written
from it: ``python -m cxrsyn.core.studies --write`` (``make studies``); the test suite checks that the
committed files are what it writes, and the Makefile and the tests list the studies from the same folder.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from cxrsyn.core.config import CONF_DIR

EXPERIMENTS_DIR = CONF_DIR.parent / "experiments"
SEED_KEY = "seed"
SOURCES = ("real", "phantom")  # conf/source/: each profile names the seeds experiments run (profile.seeds)


@dataclass(frozen=True)
class StudyConfig:
    name: str
    question: str
    published: str
    primary: dict[str, str]
    sweep: dict[str, list[str]]  # swept key -> its values on real data, in the config's order (seed included)
    seeds_by_source: dict[str, list[str]]  # the seeds under each source (they may come from its profile)
    held_equal: str | None = None  # what every arm shares: steps or epochs (experiment.held_equal)
    budget: int | None = None  # how many of them (trainer.max_steps or trainer.max_epochs)
    compare_test_sets: tuple[tuple[str, str], ...] = ()

    @property
    def arm_keys(self) -> list[str]:
        return [key for key in self.sweep if key != SEED_KEY]


def study_names() -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


def load_study(name: str) -> StudyConfig:
    """One study's facts, read from its file without composing (no data root needed); an interpolation in
    its sweep (``seed: ${profile.seeds}``) is resolved against each source's profile (conf/source/); the
    training budget from the study, else from what every study shares (conf/study/default.yaml)."""
    cfg = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml")
    sweeps = {source: _sweep(cfg, source) for source in SOURCES}
    shared = OmegaConf.load(CONF_DIR / "study" / "default.yaml")
    held_equal = cfg.experiment.get("held_equal")
    limit = {"steps": "trainer.max_steps", "epochs": "trainer.max_epochs"}.get(str(held_equal))
    budget = None
    if limit:
        budget = OmegaConf.select(cfg, limit, default=OmegaConf.select(shared, limit, default=None))
    return StudyConfig(
        name=cfg.experiment.name,
        question=cfg.experiment.question,
        published=cfg.experiment.published,
        primary=dict(cfg.experiment.primary),
        sweep=sweeps["real"],
        seeds_by_source={source: sweep.get(SEED_KEY, []) for source, sweep in sweeps.items()},
        held_equal=held_equal,
        budget=None if budget is None else int(budget),
        compare_test_sets=tuple(
            tuple(map(str, pair)) for pair in cfg.experiment.get("compare_test_sets") or ()
        ),
    )


def _sweep(cfg: DictConfig, source: str) -> dict[str, list[str]]:
    merged = OmegaConf.merge(OmegaConf.load(CONF_DIR / "source" / f"{source}.yaml"), cfg)
    params = merged.hydra.sweeper.params
    return {key: [value.strip() for value in str(params[key]).split(",")] for key in params}


def primary_text(study: StudyConfig) -> str:
    """The primary endpoint as the table of studies states it."""
    metric, test_set = study.primary["metric"].upper(), study.primary["test_set"]
    if study.primary.get("comparison") == "test_sets":
        pairs = [pair for pair in study.compare_test_sets if test_set in pair] or [(test_set, "?")]
        return "; ".join(f"Δ{metric} `{a}` - `{b}`, same models" for a, b in pairs)
    return f"{metric} on `{test_set}`"


def held_equal_text(study: StudyConfig) -> str:
    if not study.held_equal:
        return "not stated"
    return f"{study.budget} {study.held_equal}" if study.budget is not None else str(study.held_equal)


def wandb_sweep(study: StudyConfig) -> str:
    """The W&B sweep file of a study: the same grid as its Hydra sweep, one cxrsyn.train job per point."""
    spec = {
        "program": "cxrsyn/train.py",
        "method": "grid",
        "metric": {"name": f"test/{study.primary['test_set']}/{study.primary['metric']}", "goal": "maximize"},
        "parameters": {
            key: {"values": [yaml.safe_load(v) for v in values]} for key, values in study.sweep.items()
        },
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "cxrsyn.train",
            f"+experiment={study.name}",
            "hydra.mode=RUN",
            "logger=wandb",
            "${args_no_hyphens}",
        ],
    }
    header = (
        f"# W&B sweep for {study.name}, written from conf/experiment/{study.name}.yaml by `make studies`: do not\n"
        f"# edit. `wandb sweep experiments/{study.name}/wandb_sweep.yaml`, then `wandb agent <id>`. The agent\n"
        "# runs one cxrsyn.train job per grid point (hydra.mode=RUN turns the experiment's own multirun off),\n"
        "# each its own W&B run, grouped under the experiment; cells the experiment excludes finish at once.\n"
        "# Seeds: the real-data profile's (conf/source/real.yaml). Add source=phantom to the command to try it\n"
        "# offline.\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=False, width=110)


def _arms(study: StudyConfig) -> str:
    return " x ".join(f"`{key}` = {', '.join(study.sweep[key])}" for key in study.arm_keys)


def _seeds(study: StudyConfig) -> str:
    real, phantom = (", ".join(study.seeds_by_source[source]) for source in SOURCES)
    return real if real == phantom else f"{real} (phantom: {phantom})"


def studies_readme(studies: list[StudyConfig]) -> str:
    rows = [
        f"| [{s.name}]({s.name}/) | {_arms(s)} | {_seeds(s)} | {held_equal_text(s)} | {s.question} | "
        f"{primary_text(s)} | {s.published} |"
        for s in studies
    ]
    return "\n".join(
        [
            "# Experiments",
            "",
            "<!-- Written from conf/experiment/*.yaml by `make studies` (python -m cxrsyn.core.studies --write):",
            "     edit the study configs, not this file. -->",
            "",
            "One folder per study: its question, the exact commands, the published numbers to compare with, a",
            "W&B sweep file, and the results of its phantom run under `phantom/` (labelled as phantom). Run a study",
            "with `python -m cxrsyn.train +experiment=NAME` (every arm and seed) and read it with",
            "`python -m cxrsyn.report <its multirun folder>` ([docs/studies.md](../docs/studies.md)).",
            "",
            "| study | arms | seeds | held equal | question | primary endpoint | read it against |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "*Held equal*: what every arm of a study shares (`experiment.held_equal`), so that arms differ only in",
            "what they train on: optimiser steps (`trainer.max_steps`, batches of 32), however many images an arm",
            "has. *Primary endpoint*: the comparison the study's question rests on (`experiment.primary`); the report",
            "labels it and every other comparison secondary, and Holm-adjusts each family of comparisons apart.",
            "",
            "`make experiments` reruns every study with `source=phantom` and rewrites each `phantom/` folder",
            "(results.md, csv, report.json, small figures and `COMMAND`, the settings used). Phantom results show",
            "that a study runs end to end and what it writes; they are not evidence about radiographs.",
            "",
            "Seeds come from the source's profile (`profile.seeds` in conf/source/): five on real data, where the",
            "study-level interval (Student's t with seeds - 1 df) needs them; three on the phantom, which the",
            "report flags as underpowered. More: `'seed=range(0,10)'`.",
            "",
        ]
    )


def expected_files() -> dict[Path, str]:
    """Every file written from the study configs, with its content."""
    studies = [load_study(name) for name in study_names()]
    files = {EXPERIMENTS_DIR / "README.md": studies_readme(studies)}
    for study in studies:
        files[EXPERIMENTS_DIR / study.name / "wandb_sweep.yaml"] = wandb_sweep(study)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the files (default: list stale ones)")
    parser.add_argument("--names", action="store_true", help="print the study names, one per line")
    args = parser.parse_args(argv)
    if args.names:
        print("\n".join(study_names()))
        return 0
    files = expected_files()
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    for path in stale:
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
        print(f"{'wrote' if args.write else 'stale'}: {path.relative_to(CONF_DIR.parent)}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    raise SystemExit(main())
