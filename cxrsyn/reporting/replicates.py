"""A study counts seeds, not run folders: two runs of one arm with one seed (``-m seed=0,0``, a job rerun into
a second folder) are the same replicate, so the report keeps the first and lists the others. Means, sds,
seed counts and the seed-level bootstrap then see each seed once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def one_run_per_seed(
    runs: Sequence[T], arm: Callable[[T], Any], seed: Callable[[T], Any], name: Callable[[T], str]
) -> tuple[list[T], dict[str, str]]:
    """The runs with the first of each (arm, seed) kept, in their order, and ``{dropped run: kept run}`` by
    ``name`` for the others."""
    kept: dict[tuple[Any, Any], T] = {}
    duplicates: dict[str, str] = {}
    for run in runs:
        key = (arm(run), seed(run))
        if key in kept:
            duplicates[name(run)] = name(kept[key])
        else:
            kept[key] = run
    return list(kept.values()), duplicates


def duplicate_line(duplicates: dict[str, str]) -> str | None:
    """The warning a report prints for collapsed runs (None without any)."""
    if not duplicates:
        return None
    pairs = ", ".join(f"{dropped} (same arm and seed as {first})" for dropped, first in duplicates.items())
    return (
        f"report: warning: {len(duplicates)} run(s) repeat an arm and seed already counted and are left out: "
        f"{pairs}; each seed counts once"
    )
