"""Evaluate a trained checkpoint on a test set.

    python -m cxrsyn.evaluate ckpt_path=CKPT data=rsna data.root=DIR hydra.run.dir=OUT

Writes ``OUT/metrics.json`` and ``OUT/predictions/<name>.csv`` as a training run does. Config:
``conf/evaluate.yaml``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cxrsyn.core.config import CONF_DIR, check_job, exit_on_unknown_choice
from cxrsyn.core.errors import report_known_errors


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
@report_known_errors
def main(cfg: DictConfig) -> None:
    check_job(cfg)  # bad values and +keys nothing reads: one line, before any work
    # imported here, not at the top: worker processes spawned later re-import this module as __mp_main__
    from cxrsyn.evaluation.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    exit_on_unknown_choice()
    main()
