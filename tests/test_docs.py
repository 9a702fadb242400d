"""The front door and the docs stay true: the README is short, every relative link resolves (file and
heading), the demo's expected result in the README is what experiments/crop_ablation/phantom holds, and
committed results stay small."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOC_FILES = [
    REPO_ROOT / "README.md",
    *sorted((REPO_ROOT / "docs").glob("*.md")),
    REPO_ROOT / "experiments" / "README.md",
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MAX_COMMITTED_RESULT_BYTES = 500 * 1024
DEMO_SETS = {"rsna": "phantom adult set", "kermany": "phantom paediatric set"}


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation other than - and _ dropped, spaces to -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def test_readme_is_a_front_door_of_at_most_200_lines():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(doc: Path):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors_of(path):
            broken.append(f"{target}: no heading '{anchor}'")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def _p(value: float) -> str:
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def test_readme_demo_result_is_the_committed_phantom_report():
    report = json.loads((REPO_ROOT / "experiments/crop_ablation/phantom/report.json").read_text())
    expected = []
    for verdict in report["study_comparisons"]:
        assert (verdict["arm_a"], verdict["arm_b"]) == ("data=synthetic_cropped", "data=synthetic_raw")
        lo, hi = verdict["delta_auroc_ci"]
        expected.append(
            f"- {verdict['test_set']} ({DEMO_SETS[verdict['test_set']]}): ΔAUROC cropped - raw "
            f"{verdict['delta_auroc']:.3f} [95% CI {lo:.3f}, {hi:.3f}], p {_p(verdict['p'])} "
            f"({verdict['n_seeds']} seeds)"
        )
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("<!-- demo-result: start -->\n")[1].split("<!-- demo-result: end -->")[0]
    assert block.strip().splitlines() == expected


def test_no_committed_result_exceeds_500_kb():
    large = [
        f"{path.relative_to(REPO_ROOT)} ({path.stat().st_size // 1024} KB)"
        for path in (REPO_ROOT / "experiments").rglob("*")
        if path.is_file() and path.stat().st_size > MAX_COMMITTED_RESULT_BYTES
    ]
    assert not large, "downsample or drop: " + ", ".join(large)


@pytest.mark.parametrize("notebook", sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_saved_with_small_outputs_and_no_error(notebook: Path):
    """`make notebooks` saved them executed: every code cell ran, at least one figure, no error, and the file
    stays small enough to read on GitHub."""
    book = json.loads(notebook.read_text())
    code = [cell for cell in book["cells"] if cell["cell_type"] == "code"]
    assert all(cell.get("execution_count") for cell in code), "run `make notebooks`"
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert all(cell.get("id") for cell in book["cells"])
    assert notebook.stat().st_size <= MAX_COMMITTED_RESULT_BYTES
