"""Derive a dataset folder from another: ``python -m cxrsyn.postprocess in_dir=DIR out_dir=DIR2 crop_bottom_fraction=0.3``.

The output manifest records each source image, its sha256 and the operation; rerunning is idempotent.
The same crop is a transform too (``crop_bottom_fraction`` on any data source), so sweeps need no copies.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cxrsyn.core.config import compose_or_exit
from cxrsyn.core.errors import report_known_errors


@report_known_errors
def main(argv: Sequence[str] | None = None) -> int:
    # imported here, not at the top: worker processes spawned later re-import this module as __mp_main__
    from cxrsyn.generate.postprocess import crop_folder

    cfg = compose_or_exit("postprocess", list(sys.argv[1:] if argv is None else argv))
    crop_folder(cfg.in_dir, cfg.out_dir, float(cfg.crop_bottom_fraction))
    return 0


if __name__ == "__main__":
    sys.exit(main())
