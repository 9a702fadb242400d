"""Audit a synthetic set before trusting it: contamination, label fidelity, distance to real data, artifacts.

    python -m cxrsyn.audit data=synthetic_raw 'test_sets=[rsna,kermany]' out_dir=OUT
    python -m cxrsyn.audit source=phantom out_dir=OUT          # offline, on phantom stand-ins

Writes ``OUT/audit.json``, ``OUT/audit.md``, ``OUT/figures/``, ``OUT/label_audit.csv`` and ``OUT/exclude.txt``
(train without the flagged images: ``data.exclude_file=OUT/exclude.txt``). Config: ``conf/audit.yaml``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cxrsyn.core.config import CONF_DIR, check_job, exit_on_unknown_choice
from cxrsyn.core.errors import report_known_errors


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="audit")
@report_known_errors
def main(cfg: DictConfig) -> None:
    check_job(cfg)  # bad values and +keys nothing reads: one line, before any work
    # imported here, not at the top: worker processes spawned later re-import this module as __mp_main__
    from cxrsyn.auditing.run import audit

    audit(cfg)


if __name__ == "__main__":
    exit_on_unknown_choice()
    main()
