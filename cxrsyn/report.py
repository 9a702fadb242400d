"""Write a study's results table, paired comparisons and figures from its run folders.

    python -m cxrsyn.report DIR [--out OUT] [--n-resamples 2000] [--seed 0] [--no-figures] [--paper FILE]

DIR is a training run folder or a multirun folder (``hydra.sweep.dir``). See
``cxrsyn.reporting.write`` for what is written.
"""

from __future__ import annotations

import argparse
import sys

from cxrsyn.core.errors import report_known_errors


@report_known_errors
def main(argv: list[str] | None = None) -> None:
    # imported here, not at the top: worker processes spawned later re-import this module as __mp_main__
    from cxrsyn.reporting.paper import PAPER_FILE
    from cxrsyn.reporting.write import write_report

    parser = argparse.ArgumentParser(prog="python -m cxrsyn.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run folder or a multirun folder")
    parser.add_argument("--out", default=None, help="where to write (default: the folder itself)")
    parser.add_argument("--n-resamples", type=int, default=2000, help="paired-bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="paired-bootstrap seed")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - CI level and the test's level")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument(
        "--paper",
        default=str(PAPER_FILE),
        help="the published numbers shown beside matching arms (a paper.yaml)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    write_report(
        args.folder,
        args.out,
        args.n_resamples,
        args.seed,
        args.alpha,
        figures=not args.no_figures,
        paper_file=args.paper,
    )


if __name__ == "__main__":
    main()
