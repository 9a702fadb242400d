"""The written interface every generator keeps (Nano Banana, RoentGen-v2, the phantom, or your own class
named by ``generator._target_``): ``cxrsyn.generate.run`` talks to nothing else.

A generator is a config-built object that turns image requests (from the prompt grid) into kept images in an
``OutputStore``. It says which of its settings change the images (a folder holds one set of them), which
extra grid attributes its prompts use, how it is billed (None: free), and what must hold before the first
request (a key, credentials); ``generate`` makes the images and returns the run's ``Counts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from cxrsyn.core.errors import CxrsynError
from cxrsyn.generate.base import Counts
from cxrsyn.generate.cost import Billing
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore


@runtime_checkable
class Generator(Protocol):
    name: str  # the manifest's ``generator`` column
    n_per_class: int
    prompt_template: str
    grid_attributes: Mapping[str, Sequence[str]]  # attributes added to (or narrowing) the prompt grid

    @property
    def model(self) -> str:
        """The model id recorded in every row (the id asked for; ``model_version`` is what answered)."""
        ...

    def image_settings(self) -> dict[str, Any]:
        """The settings that change the images; a rerun into the same folder must match them."""
        ...

    def billing(self) -> Billing | None:
        """How a run is priced (``cxrsyn.generate.cost``), or None when it costs nothing."""
        ...

    def paid_calls(self, n: int) -> str:
        """What making ``n`` images calls, in words (the dry run and every run print it)."""
        ...

    def check_ready(self) -> None:
        """Stop with one line before any request when something it needs is missing (a key, credentials)."""
        ...

    def generate(self, requests: Sequence[ImageRequest], store: OutputStore) -> Counts:
        """Make the images of ``requests`` (none of them kept yet) into ``store``."""
        ...


def as_generator(built: Any, target: str) -> Generator:
    """``built`` if it keeps the interface, else one line naming what it lacks."""
    if not isinstance(built, Generator):
        missing = [
            name
            for name in (*Generator.__annotations__, "model", *_protocol_methods())
            if not hasattr(built, name)
        ]
        raise CxrsynError(
            f"generator._target_={target} does not keep cxrsyn.generate.generator.Generator (missing: "
            f"{', '.join(missing) or 'unknown'}); add them, see cxrsyn/generate/phantom_generator.py"
        )
    return built


def _protocol_methods() -> list[str]:
    return [name for name in vars(Generator) if not name.startswith("_") and callable(vars(Generator)[name])]
