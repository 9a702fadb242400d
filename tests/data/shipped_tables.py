"""The real label tables torchxrayvision ships, and image trees of hard links that match them: the counts of a
reader's selection over a full table are tested with every selected file present, without writing
tens of thousands of images."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from pathlib import Path


def torchxrayvision_file(name: str) -> Path:
    """A data file of torchxrayvision, found without importing it (its import loads torchvision models)."""
    return Path(
        importlib.metadata.distribution("torchxrayvision").locate_file(f"torchxrayvision/data/{name}")
    )


def link_images(template: Path, targets: Iterable[Path]) -> int:
    """Hard links to one small image at every target path (folders made as needed); returns how many."""
    made: set[Path] = set()
    count = 0
    for target in targets:
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        os.link(template, target)
        count += 1
    return count
