"""A calm log: third-party lines that say nothing about the run are dropped (Lightning's advertising tips and
device banner on CPU, a deprecation warning Lightning repeats in every job), and Lightning's lines are printed
once, by the run's own log set-up (Hydra: console and ``train.log``), not twice. Nothing of cxrsyn's is
dropped."""

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
    if logging.getLogger().handlers:  # the run set up logging: Lightning's own console handlers repeat it
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
            logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines())
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
