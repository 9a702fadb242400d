"""``generator=phantom`` behind the same interface and output format as the real generators."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from cxrsyn.generate.base import Counts
from cxrsyn.generate.cost import Billing
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore
from cxrsyn.phantom.grid import GridCell
from cxrsyn.phantom.simulator import PHANTOM_VERSION, PhantomSpec, render


@dataclass
class PhantomGenerator:
    """Draws each request's grid cell with the phantom simulator (the prompt is recorded, not read)."""

    n_per_class: int = 150
    prompt_template: str = "phantom {class_name}: {age} year old {sex}, {habitus}, {projection}. {finding}."
    domain: str = "generator_like"
    image_size: int = 256
    shortcut_strength: float = 0.5
    show_progress: bool = True
    grid_attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)

    name = "phantom"

    @property
    def model(self) -> str:
        return f"phantom-v{PHANTOM_VERSION}-{self.domain}"

    def image_settings(self) -> dict[str, Any]:
        """The settings that change the images (the prompt is recorded, not read)."""
        return {
            "phantom_version": PHANTOM_VERSION,
            "domain": self.domain,
            "image_size": self.image_size,
            "shortcut_strength": self.shortcut_strength,
        }

    def billing(self) -> Billing | None:
        return None

    def paid_calls(self, n: int) -> str:
        return "none (the phantom is drawn locally)"

    def check_ready(self) -> None:
        pass

    def generate(self, requests: Sequence[ImageRequest], store: OutputStore) -> Counts:
        counts = Counts()
        for request in tqdm(requests, desc="phantom", unit="img", disable=not self.show_progress):
            grid_attributes = {k: v for k, v in request.attributes.items() if k not in ("finding", "age")}
            spec = PhantomSpec(
                domain=self.domain,
                n_per_class=1,
                image_size=self.image_size,
                shortcut_strength=self.shortcut_strength,
                attributes={name: [value] for name, value in grid_attributes.items()},
            )
            pixels, drawn = render(
                GridCell(request.index, request.label, grid_attributes, request.seed), spec
            )
            buffer = io.BytesIO()
            Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
            extra = {f"phantom_{key}": value for key, value in drawn.items() if key not in request.attributes}
            extra["model_version"] = self.model
            store.save(request, buffer.getvalue(), extra)
            counts.ok += 1
        return counts
