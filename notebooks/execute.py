"""Execute the notebooks on phantom outputs and save them with their outputs (``make notebooks``), so a reader
sees tables and figures on GitHub without running anything.

inspect_dataset reads a small generator-like phantom set written under outputs/notebooks/ (the phantom's
defaults, 40 images per class); read_report reads the committed phantom report of the crop ablation
(experiments/crop_ablation/phantom). Images in the outputs are downsampled so that each notebook stays small
(the suite fails on any notebook over 500 KB); cells get stable ids. The suite executes the same notebooks
on its own phantom study (tests/training/test_experiments.py).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("inspect_dataset", "read_report")
MAX_SIDE = 480  # pixels of the longer side of a saved figure


def phantom_set(folder: Path) -> Path:
    from cxrsyn.phantom.simulator import PhantomSpec, write_phantom_dataset

    return write_phantom_dataset(folder, PhantomSpec(n_per_class=40), show_progress=False)


def smaller_png(data: str) -> str:
    """A base64 PNG with its longer side at most MAX_SIDE pixels, palette-quantised."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    buffer = io.BytesIO()
    image.quantize(colors=128).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def execute(name: str, environment: dict[str, str]) -> Path:
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / f"{name}.ipynb"
    book = nbformat.read(path, as_version=4)
    os.environ.update(environment)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    for index, cell in enumerate(book.cells):
        cell["id"] = f"{name}-{index}"
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise SystemExit(f"{path}: cell {index} raised {output['ename']}: {output['evalue']}")
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = smaller_png(data["image/png"])
    book.metadata.pop("widgets", None)
    nbformat.validate(book)
    nbformat.write(book, path)
    print(f"{path.relative_to(ROOT)}: {len(book.cells)} cells, {path.stat().st_size / 1024:.0f} KB")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=ROOT / "outputs" / "notebooks" / "generator_like")
    parser.add_argument("--report", type=Path, default=ROOT / "experiments" / "crop_ablation" / "phantom")
    args = parser.parse_args()
    dataset = phantom_set(args.dataset)
    environment = {
        "CXRSYN_DATASET": os.path.relpath(dataset, ROOT),
        "CXRSYN_REPORT": os.path.relpath(args.report, ROOT),
    }
    for name in NOTEBOOKS:
        execute(name, environment)


if __name__ == "__main__":
    main()
