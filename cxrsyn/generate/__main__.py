"""Generate a synthetic dataset folder.

    python -m cxrsyn.generate [generator=nano_banana_2] [out_dir=DIR] [generator.n_per_class=N] [dry_run=true]
    python -m cxrsyn.generate generator=nano_banana      # the paper's model (gemini-2.5-flash-image)
    python -m cxrsyn.generate generator=phantom out_dir=DIR

Rerunning the same command resumes: only missing images are made, nothing is paid twice. Config:
``conf/generate.yaml``; prices: ``conf/prices/gemini.yaml``; guide: ``docs/generating.md``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cxrsyn.core.config import CONF_DIR, check_job, exit_on_unknown_choice
from cxrsyn.core.errors import report_known_errors


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="generate")
@report_known_errors
def main(cfg: DictConfig) -> None:
    check_job(cfg)  # bad values and +keys nothing reads: one line, before any work
    # imported here, not at the top: worker processes spawned later re-import this module as __mp_main__
    from cxrsyn.generate.run import generate

    generate(cfg)


if __name__ == "__main__":
    exit_on_unknown_choice()
    main()
