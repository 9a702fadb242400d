"""A calm log: third-party lines that say nothing about the run are dropped (Lightning's advertising tips and
device banner on CPU, a deprecation warning Lightning repeats in every job). Nothing of cxrsyn's own is."""

from __future__ import annotations

import logging
import warnings

_DROPPED_LIGHTNING_LINES = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")
_QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # lightning's pytree helper on recent torch, once per job
    r".*does not have many workers which may be a bottleneck",  # we choose num_workers on purpose
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DROPPED_LIGHTNING_LINES)


def quiet_third_party_noise() -> None:
    """Install the filters (idempotent)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines())
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
