"""Train a pneumonia classifier and test it: ``python -m cxrsyn.train [overrides]``.

Config root: ``conf/``, primary config ``conf/train.yaml``. Studies append an experiment:
``python -m cxrsyn.train +experiment=NAME``. Resume a crashed run: add ``hydra.run.dir=<its folder>
ckpt_path=last``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cxrsyn.core.config import CONF_DIR, check_job, exit_on_unknown_choice
from cxrsyn.core.errors import report_known_errors


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@report_known_errors
def main(cfg: DictConfig) -> None:
    check_job(cfg)  # bad values and +keys nothing reads: one line, before any work
    # imported here, not at the top: worker processes spawned later re-import this module as __mp_main__
    from cxrsyn.training.run import train

    train(cfg)


if __name__ == "__main__":
    exit_on_unknown_choice()
    main()
