"""The published numbers a study's arms are shown beside: a YAML file (``experiments/crop_ablation/paper.yaml``
by default) holding the citation and, per training data, the paper's label, test-set sizes and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrsyn.core.config import CONF_DIR
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import read_yaml
from cxrsyn.reporting.runs import Run, Study, override_map

PAPER_FILE = CONF_DIR.parent / "experiments" / "crop_ablation" / "paper.yaml"
METRICS = ("auroc", "aupr")


@dataclass(frozen=True)
class Reported:
    """What the paper reports on one test set: n and, per metric, the value and its CI (None: not reported)."""

    n: int
    values: dict[str, float | None]
    cis: dict[str, tuple[float, float] | None]


@dataclass(frozen=True)
class PaperArm:
    key: str  # the training data's name (a run's train_data)
    label: str
    test_sets: dict[str, Reported]
    also_matches: dict[str, Any] = field(default_factory=dict)  # train_data and overrides of other runs

    def matched_by(self, run: Run) -> bool:
        """Whether ``run`` counts as this arm through ``also_matches`` (its training data and overrides)."""
        if not self.also_matches:
            return False
        overrides = override_map(run)
        for key, wanted in self.also_matches.items():
            found = run.info.get("train_data") if key == "train_data" else overrides.get(key)
            if found is None or not _same(found, wanted):
                return False
        return True


@dataclass(frozen=True)
class Paper:
    citation: str
    note: str
    arms: dict[str, PaperArm]

    def key_of(self, run: Run) -> str:
        """The paper's arm ``run`` matches: the first whose ``also_matches`` it meets, else its training data."""
        for arm in self.arms.values():
            if arm.matched_by(run):
                return arm.key
        return str(run.info.get("train_data"))

    def arms_in(self, study: Study) -> list[PaperArm]:
        """The paper's arms the study's runs match, in the order of their first run."""
        keys = dict.fromkeys(self.key_of(run) for run in study.runs)
        return [self.arms[key] for key in keys if key in self.arms]


def load_paper(path: str | Path = PAPER_FILE) -> Paper:
    """Read a paper file; a missing file or field, or a file that is not plain YAML, is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CxrsynError(
            f"paper file {path} does not exist; give one with --paper FILE "
            "(format: experiments/crop_ablation/paper.yaml in the cxrsyn repository)"
        )
    data = read_yaml(path) or {}
    arms = {}
    for key, arm in _field(data, "arms", path, Mapping).items():
        where = f"arms.{key}"
        test_sets = {
            name: _reported(numbers, path, f"{where}.test_sets.{name}")
            for name, numbers in _field(arm, "test_sets", path, Mapping, where).items()
        }
        arms[str(key)] = PaperArm(
            str(key),
            str(_field(arm, "label", path, str, where)),
            test_sets,
            dict(arm.get("also_matches") or {}),
        )
    return Paper(str(_field(data, "citation", path, str)), str(data.get("note") or ""), arms)


def _reported(numbers: Any, path: Path, where: str) -> Reported:
    n = _field(numbers, "n", path, int, where)  # also checks that ``numbers`` is a mapping
    values, cis = {}, {}
    for metric in METRICS:
        value, ci = numbers.get(metric), numbers.get(f"{metric}_ci")
        if value is not None and not isinstance(value, (int, float)):
            raise CxrsynError(f"{path}: {where}.{metric} must be a number or null, not {value!r}")
        if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
            raise CxrsynError(f"{path}: {where}.{metric}_ci must be [low, high] or null, not {ci!r}")
        values[metric] = None if value is None else float(value)
        cis[metric] = None if ci is None else (float(ci[0]), float(ci[1]))
    return Reported(int(n), values, cis)


def _field(data: Any, key: str, path: Path, kind: type, where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if not isinstance(data, Mapping) or not isinstance(data.get(key), kind):
        found = data.get(key) if isinstance(data, Mapping) else data
        raise CxrsynError(
            f"{path}: {name} is missing or not a {kind.__name__} (found {found!r}); see {PAPER_FILE}"
        )
    return data[key]


def _same(found: Any, wanted: Any) -> bool:
    """Equal as numbers when both are numbers (``0.30`` is ``0.3``), else as text."""
    try:
        return abs(float(found) - float(wanted)) < 1e-9
    except (TypeError, ValueError):
        return str(found) == str(wanted)
