"""From the attribute grid to image requests: findings, ages in years, and the prompt text per generator.

The paper's exact prompts are unknown (study.md §1). The default findings and templates below are this
project's choice, written as a radiologist would describe the images; every one is a config value
(``conf/generate.yaml``), and each request keeps its prompt in the manifest.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.manifest import NEGATIVE_LABEL, POSITIVE_LABEL
from cxrsyn.core.seeding import derive_seed
from cxrsyn.phantom.grid import CLASS_NAMES, DEFAULT_ATTRIBUTES, AttributeGrid, GridCell

DEFAULT_FINDINGS: dict[str, tuple[str, ...]] = {
    "pneumonia": (
        "lobar consolidation of the right lower lobe with air bronchograms",
        "lobar consolidation of the right middle lobe obscuring the right heart border",
        "lobar consolidation of the right upper lobe",
        "lobar consolidation of the left lower lobe obscuring the left hemidiaphragm",
        "consolidation of the lingula and left upper lobe",
        "multifocal patchy airspace opacities in both lungs",
        "bilateral patchy opacities, worse at the lung bases",
    ),
    "normal": ("clear lungs without consolidation, effusion or pneumothorax; normal heart size",),
}
DEFAULT_AGE_YEARS: dict[str, tuple[int, int]] = {"18-39": (18, 39), "40-64": (40, 64), "65-90": (65, 90)}
TEMPLATE_FIELDS = ("age", "sex", "habitus", "projection", "finding", "class_name")


@dataclass(frozen=True)
class ImageRequest:
    """One image to make: its id (also its file name), class, attributes, seed and prompt."""

    id: str
    index: int
    label: int
    attributes: Mapping[str, Any]
    seed: int
    prompt: str

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


@dataclass
class PromptGrid:
    """The controlled prompt grid: attributes crossed with the class, a finding per class, ages in years."""

    attributes: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    findings: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_FINDINGS))
    age_years: Mapping[str, Sequence[int]] = field(default_factory=lambda: dict(DEFAULT_AGE_YEARS))

    def cells(self, n_per_class: int, seed: int) -> list[GridCell]:
        return AttributeGrid(self.attributes).sample(n_per_class, seed)

    def requests(self, n_per_class: int, seed: int, template: str) -> list[ImageRequest]:
        """Balanced, deterministic requests: pneumonia first. Findings cycle through each class's list in a
        seeded order, so every finding is used as evenly as the count allows."""
        _check_template(template)
        for class_name in CLASS_NAMES.values():
            if not self.findings.get(class_name):
                raise CxrsynError(
                    f"generator grid: findings.{class_name} is empty; give at least one finding"
                )
        cells = self.cells(n_per_class, seed)
        order = {
            label: np.random.default_rng(derive_seed(seed, 0xF1D, label)).permutation(
                len(self.findings[name])
            )
            for label, name in CLASS_NAMES.items()
        }
        requests = []
        position = {POSITIVE_LABEL: 0, NEGATIVE_LABEL: 0}
        for cell in cells:
            findings = self.findings[cell.class_name]
            finding = findings[order[cell.label][position[cell.label] % len(findings)]]
            position[cell.label] += 1
            attributes = {**cell.attributes, "finding": finding, "age": self._age(cell)}
            prompt = render_prompt(template, attributes, cell.class_name)
            requests.append(
                ImageRequest(
                    f"{cell.class_name}-{cell.index:05d}",
                    cell.index,
                    cell.label,
                    attributes,
                    cell.seed,
                    prompt,
                )
            )
        return requests

    def _age(self, cell: GridCell) -> int:
        band = cell.attributes.get("age_band")
        if band is None:
            return 50
        if band not in self.age_years:
            raise CxrsynError(f"generator grid: age_years has no range for age band {band!r}; add one")
        low, high = self.age_years[band]
        return int(np.random.default_rng(derive_seed(cell.seed, 0xA6E)).integers(low, high + 1))


def render_prompt(template: str, attributes: Mapping[str, Any], class_name: str) -> str:
    values = {**attributes, "class_name": class_name}
    return " ".join(string.Formatter().vformat(template, (), _Missing(values)).split())


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        raise CxrsynError(
            f"prompt template uses {{{key}}}, which is not an attribute; use one of {sorted(self)}"
        )


def _check_template(template: str) -> None:
    if not template or not template.strip():
        raise CxrsynError(
            "generator.prompt_template is empty; give a template such as '{age} year old {sex}. {finding}'"
        )
